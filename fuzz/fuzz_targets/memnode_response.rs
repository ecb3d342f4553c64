//! Fuzz target `memnode_response`: see `mitosis_fuzz::decoders::memnode_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::memnode_response, data));
