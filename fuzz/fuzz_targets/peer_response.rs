//! Fuzz target `peer_response`: see `mitosis_fuzz::decoders::peer_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mitosis_fuzz::run(mitosis_fuzz::decoders::peer_response, data));
