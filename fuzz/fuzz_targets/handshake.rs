//! Fuzz target `handshake`: see `mitosis_fuzz::decoders::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::handshake, data));
