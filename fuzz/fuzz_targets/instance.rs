//! Fuzz target `instance`: see `mitosis_fuzz::decoders::instance`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::instance, data));
