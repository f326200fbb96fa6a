//! The NAT-PMP reply parser on arbitrary datagrams (the body: fuzz/bodies/natpmp_reply.rs,
//! also replayed over the committed corpus by `cargo test --test fuzz_replay`).
#![no_main]

#[path = "../bodies/natpmp_reply.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
