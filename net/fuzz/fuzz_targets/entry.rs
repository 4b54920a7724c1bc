#![no_main]
//! The Raft entry codec of a shard's blocks: `Proposal::decode_entry` never panics on any
//! bytes (a replica decodes every committed entry, whoever proposed it), and an entry that
//! decodes re-encodes to bytes that decode to an equal block.

use libfuzzer_sys::fuzz_target;
use occam_net::wire::Proposal;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Proposal::decode_entry(data) {
        let again = Proposal::decode_entry(&p.encode_entry()).expect("a re-encoded entry decodes");
        assert_eq!(again, p, "entry round trip changed the block");
    }
});
