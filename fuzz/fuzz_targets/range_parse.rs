//! PortRange and Protocols parsing on arbitrary text (the body: fuzz/bodies/range_parse.rs,
//! also replayed over the committed corpus by `cargo test --test fuzz_replay`).
#![no_main]

#[path = "../bodies/range_parse.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
