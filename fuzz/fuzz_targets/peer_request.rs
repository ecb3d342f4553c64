//! Fuzz target `peer_request`: see `mitosis_fuzz::decoders::peer_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::peer_request, data));
