//! Sequences of C-API calls (the body: fuzz/bodies/c_api_sequence.rs, also replayed over
//! the committed corpus by `cargo test --test fuzz_replay`).
#![no_main]

#[path = "../bodies/c_api_sequence.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
