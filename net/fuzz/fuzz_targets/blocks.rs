#![no_main]
//! Block codecs of the engine: `RawSignedBlock::decode`, `SignedBlock::decode` and
//! `AggregatedBlock::decode` never panic, and each block that decodes re-encodes to bytes that
//! decode to an equal block.

use libfuzzer_sys::fuzz_target;
use occam_engine::native::signed::{AggregatedBlock, RawSignedBlock, SignedBlock};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = RawSignedBlock::decode(data) {
        let again = RawSignedBlock::decode(&b.encode()).expect("a re-encoded raw signed block decodes");
        assert_eq!(again, b, "raw signed block round trip changed the block");
    }
    if let Ok(b) = SignedBlock::decode(data) {
        let again = SignedBlock::decode(&b.encode()).expect("a re-encoded signed block decodes");
        assert_eq!(again, b, "signed block round trip changed the block");
    }
    if let Ok(b) = AggregatedBlock::decode(data) {
        let again = AggregatedBlock::decode(&b.encode()).expect("a re-encoded aggregated block decodes");
        assert_eq!(again, b, "aggregated block round trip changed the block");
    }
});
