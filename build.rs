//! With the C ABI (feature `capi`): generates `include/portmgr.h` from `src/ffi/` with
//! cbindgen. (The shared library's soname is set by crates/portmgr-capi/build.rs.)
//!
//! The header is committed. It is rewritten only when its content changes (atomically,
//! through a temp file and a rename), so an up-to-date checkout stays clean; a copy goes
//! to `$OUT_DIR/portmgr.h` and `tests/c_abi.rs` fails when the committed one is stale.

#[cfg(feature = "capi")]
use std::env;
#[cfg(feature = "capi")]
use std::fs;
#[cfg(feature = "capi")]
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=bindings/c/cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "capi")]
    header();
}

/// Only with the C ABI (feature `capi`): a Rust program that uses the library alone
/// neither builds cbindgen nor touches include/.
#[cfg(feature = "capi")]
fn header() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let header = generate_header(&root);
    let generated = out_dir.join("portmgr.h");
    fs::write(&generated, &header).expect("writing $OUT_DIR/portmgr.h");
    println!("cargo:rustc-env=PORTMGR_GENERATED_HEADER={}", generated.display());
    write_if_changed(&root.join("include/portmgr.h"), &header);
}

#[cfg(feature = "capi")]
fn generate_header(root: &Path) -> Vec<u8> {
    let config = cbindgen::Config::from_file(root.join("bindings/c/cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading bindings/c/cbindgen.toml: {e}"));
    let v = |k: &str| env::var(k).unwrap_or_default();
    let version = format!(
        "\n/** The version of this header; compare with portmgr_version() at run time. */\n\
         #define PORTMGR_VERSION \"{}\"\n\
         #define PORTMGR_VERSION_MAJOR {}\n\
         #define PORTMGR_VERSION_MINOR {}\n\
         #define PORTMGR_VERSION_PATCH {}\n",
        v("CARGO_PKG_VERSION"),
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
    );
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .with_after_include(version)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate include/portmgr.h from src/ffi/: {e}"));
    let mut text = Vec::new();
    bindings.write(&mut text);
    text
}

#[cfg(feature = "capi")]
fn write_if_changed(path: &Path, content: &[u8]) {
    if fs::read(path).ok().as_deref() == Some(content) {
        return;
    }
    let tmp = path.with_extension(format!("h.tmp.{}", std::process::id()));
    let result = fs::create_dir_all(path.parent().expect("include/ has a parent"))
        .and_then(|()| fs::write(&tmp, content))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        // A read-only source tree (a packaged crate) still builds; the copy in OUT_DIR is there.
        println!("cargo:warning=could not update {}: {e}", path.display());
    }
}
