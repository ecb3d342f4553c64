//! Fuzz target `frame`: see `mitosis_fuzz::decoders::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::frame, data));
