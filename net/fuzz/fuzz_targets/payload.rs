#![no_main]
//! Payloads without a header: the first byte is the frame kind, the rest the payload.
//! `Message::decode` never panics, and every payload that decodes re-encodes to a frame that
//! decodes to an equal `Message`.

use libfuzzer_sys::fuzz_target;
use occam_net::wire::{Message, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else { return };
    if let Ok(m) = Message::decode(kind, payload) {
        let frame = m.encode().expect("a decoded message re-encodes");
        let again = Message::decode_frame(&frame, MAX_FRAME_LEN).expect("a re-encoded frame decodes");
        assert_eq!(again, m, "payload round trip changed the message");
    }
});
