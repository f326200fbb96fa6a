//! The C ABI's header: the committed `include/portmgr.h` is exactly what build.rs
//! generates from `src/ffi/` (a stale header fails here), and it carries the contract's
//! signatures verbatim. The C and C++ consumer tests themselves run from `tests/c/run.sh`.

use std::path::Path;
use std::process::Command;

fn generated() -> String {
    std::fs::read_to_string(env!("PORTMGR_GENERATED_HEADER")).expect("build.rs writes $OUT_DIR/portmgr.h")
}

#[test]
fn committed_header_is_not_stale() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = generated();
    let on_disk = std::fs::read_to_string(root.join("include/portmgr.h")).expect("include/portmgr.h exists");
    assert!(on_disk == fresh, "include/portmgr.h differs from what build.rs generates from src/ffi/; rebuild");
    // In a git checkout the committed version must match too: CI sees only what was committed.
    let head = Command::new("git").args(["show", "HEAD:include/portmgr.h"]).current_dir(root).output();
    if let Ok(out) = head
        && out.status.success()
    {
        assert!(
            String::from_utf8_lossy(&out.stdout) == fresh,
            "the committed include/portmgr.h is stale: src/ffi/ changed; commit the regenerated header"
        );
    }
}

#[test]
fn header_has_the_contract_signatures() {
    let h = generated();
    for sig in [
        "typedef struct portmgr_registry portmgr_registry;",
        "typedef struct portmgr_lease portmgr_lease;",
        "typedef struct portmgr_request portmgr_request;",
        "PORTMGR_OK = 0,",
        "portmgr_status portmgr_registry_open(const char *dir, portmgr_registry **out);",
        "void portmgr_registry_close(portmgr_registry *reg);",
        "uint16_t portmgr_lease_port(const portmgr_lease *lease);",
        "portmgr_status portmgr_lease_release(portmgr_lease *lease);",
        "portmgr_status portmgr_probe(uint16_t port, uint32_t protocols, bool *out_free);",
        "size_t portmgr_last_error_message(char *buf, size_t len);",
        "const char *portmgr_status_str(portmgr_status status);",
        "const char *portmgr_version(void);",
        "#define PORTMGR_PROTO_TCP 1",
        "#define PORTMGR_PROTO_UDP 2",
    ] {
        assert!(h.contains(sig), "include/portmgr.h lacks `{sig}`");
    }
    // cbindgen wraps long parameter lists; compare portmgr_allocate without whitespace.
    let flat: String = h.split_whitespace().collect::<Vec<_>>().join(" ");
    let allocate =
        "portmgr_status portmgr_allocate(portmgr_registry *reg, const portmgr_request *req, portmgr_lease **out);";
    assert!(flat.contains(allocate), "include/portmgr.h lacks `{allocate}`");
    // The Rust-only spelling of a status parameter never leaks into C.
    assert!(!h.contains("portmgr_status_code"));
}

#[test]
fn header_version_matches_the_library() {
    let h = generated();
    assert!(h.contains(&format!("#define PORTMGR_VERSION \"{}\"", env!("CARGO_PKG_VERSION"))));
    let v = portmgr::ffi::portmgr_version();
    // SAFETY: portmgr_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(v) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Every function's comment in the header says how it behaves with threads and on errors
/// (the contract asks for ownership, thread-safety and error behaviour per function).
#[test]
fn every_function_documents_threads_and_errors() {
    let h = generated();
    let mut missing = Vec::new();
    let mut count = 0;
    let mut rest = h.as_str();
    while let Some(start) = rest.find("/**") {
        let after = &rest[start..];
        let end = after.find("*/").expect("closed comment");
        let doc = &after[..end];
        let decl_end = after[end..].find([';', '{']).map_or(after.len(), |i| end + i);
        let decl = &after[end + 2..decl_end];
        rest = &after[end + 2..];
        let Some(name) = decl.split('(').next().and_then(|d| d.split_whitespace().last()) else { continue };
        let name = name.trim_start_matches('*');
        if !decl.contains('(') || !name.starts_with("portmgr_") {
            continue;
        }
        count += 1;
        let threads = doc.contains("Thread-safe") || doc.contains("thread");
        let errors = ["Errors", "errors", "Returns", "returns", "ever fails", "ignored", "no-op"]
            .iter()
            .any(|w| doc.contains(w));
        if !threads || !errors {
            missing.push(format!("{name} (threads: {threads}, errors: {errors})"));
        }
    }
    assert!(count >= 30, "found only {count} documented functions in the header");
    assert!(missing.is_empty(), "functions whose header comment lacks thread-safety or error behaviour: {missing:#?}");
}

/// Every exported function runs its body inside the panic guard (`guard`, `guard_or` or
/// `guard_quiet` in src/ffi/guard.rs, request.rs's `edit`, which is `guard` around a
/// request setter, or registry.rs's `registry_json`, `guard` around a JSON view), so no
/// panic can cross into C.
#[test]
fn every_exported_function_is_guarded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    // The wrappers themselves run their work inside `guard`.
    let registry_rs = std::fs::read_to_string(dir.join("registry.rs")).unwrap();
    let wrapper = &registry_rs[registry_rs.find("unsafe fn registry_json").expect("registry_json")..];
    assert!(wrapper[..wrapper.find("\n}\n").unwrap()].contains("guard(||"), "registry_json must run inside guard");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find("extern \"C\" fn portmgr_") {
            let after = &rest[i..];
            let name: String =
                after["extern \"C\" fn ".len()..].chars().take_while(|c| *c == '_' || c.is_alphanumeric()).collect();
            // The body: from the first `{` after the signature to the next function or item.
            let body_start = after.find('{').unwrap();
            let body_end = after[body_start..].find("\n}\n").map_or(after.len(), |e| body_start + e);
            let body = &after[body_start..body_end];
            assert!(
                ["guard(", "guard_or(", "guard_quiet(", "edit(req,", "registry_json(reg,"].iter().any(|g| body.contains(g)),
                "{}: {name} does not run its body inside the panic guard",
                path.display()
            );
            checked += 1;
            rest = &after[body_end..];
        }
    }
    assert!(checked >= 30, "found only {checked} exported functions in src/ffi");
}
