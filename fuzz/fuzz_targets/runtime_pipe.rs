//! Fuzz target `runtime_pipe`: see `mitosis_fuzz::decoders::runtime_pipe`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::runtime_pipe, data));
