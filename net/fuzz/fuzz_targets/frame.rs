#![no_main]
//! Whole frames: `Message::decode_frame` never panics on any input, and every frame that
//! decodes re-encodes to a frame that decodes to an equal `Message`.

use libfuzzer_sys::fuzz_target;
use occam_net::wire::{Message, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode_frame(data, MAX_FRAME_LEN) {
        let frame = m.encode().expect("a decoded message re-encodes");
        let again = Message::decode_frame(&frame, MAX_FRAME_LEN).expect("a re-encoded frame decodes");
        assert_eq!(again, m, "frame round trip changed the message");
    }
});
