//! Fuzz target `record`: see `mitosis_fuzz::decoders::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::record, data));
