//! Frames over QUIC streams, shared by nodes and clients.
//!
//! Each side of a connection opens one unidirectional stream and writes its frames on it in
//! order; the other side reads them with [`read_frame`]. Writers are tasks fed by bounded
//! queues ([`spawn_writer`]), so a slow peer pushes back on its sender instead of growing a
//! buffer; QUIC flow control (the windows in [`crate::tls::transport_config`]) pushes back on
//! the writer in turn.

use crate::wire::{FrameHeader, Message, WireError, HEADER_LEN};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    /// The node has as many client connections as it serves, or as many from the client's
    /// address as it takes (`limits.host_connections`).
    pub const BUSY: u32 = 4;
    /// The client sent `limits.bad_batches` batches with bad signatures; its address is
    /// refused for `limits.ban_s` seconds.
    pub const FORGED: u32 = 5;
    /// The client's address is refused for a while (a connection from it sent forgeries).
    pub const BANNED: u32 = 6;
    /// The client sent nothing for `limits.idle_s` seconds and had nothing pending.
    pub const IDLE: u32 = 7;
}

/// Why a stream of frames ended.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes were not a valid frame.
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// A frame did not arrive whole within the time limit from its first byte.
    #[error("a frame took longer than {0:?} to arrive")]
    TooSlow(Duration),
    /// The stream or connection failed.
    #[error("stream: {0}")]
    Read(quinn::ReadExactError),
}

impl From<quinn::ReadExactError> for FrameError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            // Within a frame (a clean end before one is not an error).
            quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
            other => FrameError::Read(other),
        }
    }
}

impl FrameError {
    /// True when the sender is at fault (a malformed frame, one cut short, one too slow), not
    /// the stream or the connection.
    pub fn is_bad_frame(&self) -> bool {
        !matches!(self, FrameError::Read(_))
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(recv: &mut quinn::RecvStream, max_len: usize) -> Result<Option<Message>, FrameError> {
    read_frame_within(recv, max_len, None).await
}

/// [`read_frame`], with the frame to arrive whole within `limit` of its first byte (waiting for
/// the first byte is idleness, which this does not limit).
pub async fn read_frame_within(
    recv: &mut quinn::RecvStream,
    max_len: usize,
    limit: Option<Duration>,
) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header[..1]).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let rest = async {
        recv.read_exact(&mut header[1..]).await?;
        let h = FrameHeader::parse(&header, max_len)?;
        // Grow the buffer as the bytes arrive, so a header that announces a large frame and a
        // peer that then sends nothing costs 64 KiB, not the announced size.
        let mut payload = Vec::with_capacity(h.len.min(READ_STEP));
        while payload.len() < h.len {
            let at = payload.len();
            payload.resize(at + (h.len - at).min(READ_STEP), 0);
            recv.read_exact(&mut payload[at..]).await?;
        }
        Ok::<_, FrameError>(Message::decode(h.kind, &payload)?)
    };
    let message = match limit {
        Some(limit) => tokio::time::timeout(limit, rest).await.map_err(|_| FrameError::TooSlow(limit))??,
        None => rest.await?,
    };
    Ok(Some(message))
}

/// A queue of encoded frames to one connection, bounded in frames and in bytes; the bytes of a
/// frame count from when it is queued until it is written (or dropped). Never waits: a full
/// queue refuses the frame, and the caller decides (drop it, or close the connection).
#[derive(Clone, Debug)]
pub struct FrameQueue {
    frames: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    observer: Option<QueueObserver>,
}

/// Where a queue reports its bytes: a gauge shared by many queues (their total), and a
/// histogram of a queue's depth each time a frame joins it.
#[derive(Clone, Debug)]
pub struct QueueObserver {
    /// Bytes queued, added and taken away by every queue that reports here.
    pub total: prometheus::IntGauge,
    /// One queue's bytes when a frame has joined it.
    pub depth: prometheus::Histogram,
}

/// The receiving end of a [`FrameQueue`].
#[derive(Debug)]
pub struct FrameReceiver {
    frames: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    observer: Option<QueueObserver>,
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn frame_queue(max_frames: usize, max_bytes: usize) -> (FrameQueue, FrameReceiver) {
    observed_frame_queue(max_frames, max_bytes, None)
}

/// [`frame_queue`], reporting its bytes to `observer`.
pub fn observed_frame_queue(max_frames: usize, max_bytes: usize, observer: Option<QueueObserver>) -> (FrameQueue, FrameReceiver) {
    let (frames, rx) = mpsc::channel(max_frames);
    let queued = Arc::new(AtomicUsize::new(0));
    (FrameQueue { frames, queued: queued.clone(), max_bytes, observer: observer.clone() }, FrameReceiver { frames: rx, queued, observer })
}

impl FrameQueue {
    /// Queues `frame`; false (and the frame dropped) if the queue is full, in frames or bytes,
    /// or its receiver is gone.
    pub fn try_send(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if self.frames.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if let Some(o) = &self.observer {
            o.total.add(len as i64);
            o.depth.observe(self.queued.load(Ordering::Relaxed) as f64);
        }
        true
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl FrameReceiver {
    /// The next frame; `None` once every [`FrameQueue`] is gone. Its bytes still count as
    /// queued until [`FrameReceiver::written`].
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.frames.recv().await
    }

    /// `len` bytes taken by [`FrameReceiver::recv`] were written (or given up).
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.total.sub(len as i64);
        }
    }
}

impl Drop for FrameReceiver {
    /// Frames never written leave the observer's total with the queue.
    fn drop(&mut self) {
        self.frames.close();
        while let Ok(frame) = self.frames.try_recv() {
            self.written(frame.len());
        }
    }
}

/// Writes every frame of `rx` to a stream it opens on `conn`, in order, until the queue's
/// senders are gone or the connection fails.
pub fn spawn_queue_writer(conn: quinn::Connection, mut rx: FrameReceiver) {
    tokio::spawn(async move {
        let Ok(mut send) = conn.open_uni().await else { return };
        while let Some(frame) = rx.recv().await {
            let written = send.write_all(&frame).await;
            rx.written(frame.len());
            if written.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_queue_is_bounded_in_bytes_until_frames_are_written() {
        let (q, mut rx) = frame_queue(8, 100);
        assert!(q.try_send(vec![0; 60]));
        assert!(!q.try_send(vec![0; 41]), "60 + 41 bytes is over 100");
        assert!(q.try_send(vec![0; 40]));
        assert_eq!(q.queued_bytes(), 100);
        // Taken but not yet written: still counted.
        let f = rx.recv().await.unwrap();
        assert!(!q.try_send(vec![0; 1]));
        rx.written(f.len());
        assert_eq!(q.queued_bytes(), 40);
        assert!(q.try_send(vec![0; 60]));
        // Bounded in frames too.
        let (q, _rx) = frame_queue(2, 1 << 20);
        assert!(q.try_send(vec![1]) && q.try_send(vec![2]));
        assert!(!q.try_send(vec![3]));
        assert_eq!(q.queued_bytes(), 2, "a refused frame is not counted");
    }
}
