//! The registry file on arbitrary bytes (the body: fuzz/bodies/registry_file.rs, also
//! replayed over the committed corpus by `cargo test --test fuzz_replay`).
#![no_main]

#[path = "../bodies/registry_file.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
