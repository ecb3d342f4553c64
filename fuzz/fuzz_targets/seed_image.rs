//! Fuzz target `seed_image`: see `mitosis_fuzz::decoders::seed_image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::seed_image, data));
