//! Frames over QUIC streams, shared by nodes and clients.
//!
//! Each side of a connection opens one unidirectional stream and writes its frames on it in
//! order; the other side reads them with [`read_frame`]. Writers are tasks fed by bounded
//! queues ([`spawn_writer`]), so a slow peer pushes back on its sender instead of growing a
//! buffer; QUIC flow control (the windows in [`crate::tls::transport_config`]) pushes back on
//! the writer in turn.

use crate::wire::{FrameHeader, Message, WireError, HEADER_LEN};
use tokio::sync::mpsc;

/// Frames a connection's writer queue holds before senders wait (or, with `try_send`, drop).
pub const WRITER_QUEUE: usize = 1024;

/// How much of a frame's payload is read (and allocated) at a time.
const READ_STEP: usize = 64 << 10;

/// The largest frame a node accepts from a client: a full batch of signed transactions
/// ([`crate::wire::MAX_BATCH_TXS`] at up to 153 bytes each) fits with room to spare.
pub const MAX_CLIENT_FRAME_LEN: usize = 4 << 20;

/// QUIC application error codes a node closes a connection with.
pub mod close {
    /// Normal shutdown.
    pub const DONE: u32 = 0;
    /// A malformed, oversized or unexpected frame.
    pub const PROTOCOL: u32 = 1;
    /// A message this peer may not send (a client proposing a block, say).
    pub const FORBIDDEN: u32 = 2;
    /// The peer does not read what it is sent.
    pub const NOT_READING: u32 = 3;
    /// The node has as many client connections as it serves.
    pub const BUSY: u32 = 4;
}

/// Why a stream of frames ended.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes were not a valid frame.
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    /// The stream or connection failed.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(recv: &mut quinn::RecvStream, max_len: usize) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let h = FrameHeader::parse(&header, max_len)?;
    // Grow the buffer as the bytes arrive, so a header that announces a large frame and a
    // peer that then sends nothing costs 64 KiB, not the announced size.
    let mut payload = Vec::with_capacity(h.len.min(READ_STEP));
    while payload.len() < h.len {
        let at = payload.len();
        payload.resize(at + (h.len - at).min(READ_STEP), 0);
        recv.read_exact(&mut payload[at..]).await?;
    }
    Ok(Some(Message::decode(h.kind, &payload)?))
}

/// Opens a stream on `conn` and writes every frame sent to the returned queue, in order, until
/// the queue's senders are gone or the connection fails.
pub fn spawn_writer(conn: quinn::Connection) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
    tokio::spawn(async move {
        let Ok(mut send) = conn.open_uni().await else { return };
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    tx
}

/// Encodes a message, logging (not panicking on) the one failure: a frame over the limit.
pub fn frame(message: &Message) -> Option<Vec<u8>> {
    match message.encode() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(kind = message.kind(), "not sent: {e}");
            None
        }
    }
}
