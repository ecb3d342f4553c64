//! Fuzz target `memnode_request`: see `mitosis_fuzz::decoders::memnode_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::memnode_request, data));
