//! Links to the other nodes: one outgoing QUIC connection per peer for the node's one-way
//! messages (votes, certificates, cross-shard messages), fed by a queue bounded in frames and
//! bytes, re-dialled when it fails. Raft's RPCs travel on their own streams
//! ([`crate::raft::network`]).

use crate::transport::{FrameQueue, FrameReceiver};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// The bytes of frames a link to one peer holds before it drops new ones.
pub(super) const LINK_BYTES: usize = 64 << 20;

/// The queue of frames to one peer node (at most [`crate::transport::WRITER_QUEUE`] frames and
/// [`LINK_BYTES`] bytes).
pub(super) struct Link {
    pub frames: FrameQueue,
}

/// Keeps one outgoing connection to `peer` and writes the queued frames on it, re-dialling
/// when it fails. Frames queued while it is down wait (up to the queue's bounds).
pub(super) async fn run_link(endpoint: quinn::Endpoint, config: quinn::ClientConfig, addr: SocketAddr, peer: u32, mut rx: FrameReceiver) {
    let name = crate::tls::node_name(peer);
    let mut backoff = Duration::from_millis(50);
    loop {
        let conn = match endpoint.connect_with(config.clone(), addr, &name) {
            Ok(connecting) => connecting.await,
            Err(e) => {
                error!(peer, "cannot dial: {e}");
                return;
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                debug!(peer, "dial failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        info!(peer, "link up");
        let Ok(mut send) = conn.open_uni().await else { continue };
        loop {
            let Some(frame) = rx.recv().await else { return };
            let written = send.write_all(&frame).await;
            rx.written(frame.len());
            if let Err(e) = written {
                warn!(peer, "link lost: {e}");
                break;
            }
        }
    }
}
