//! TLS identities and pinned verification for QUIC.
//!
//! Every node has a self-signed certificate (`rcgen`, ECDSA P-256) whose one subject name is
//! `node-<id>.occam`: the certificate is bound to the node id, and the cluster config pins each
//! node's certificate (its DER bytes) under that id. There is no certificate authority:
//!
//! - a node accepts a peer's client certificate only if it is byte-for-byte one of the pinned
//!   node certificates, and then knows which node it speaks to ([`PinnedCerts::node_of`]); a
//!   connection without a client certificate is a client, which may submit transactions and ask
//!   for status but not vote or propose;
//! - a node dialling a peer, and a client dialling a node, accept only the certificate pinned
//!   for the node they meant to reach.
//!
//! The TLS 1.3 handshake signatures are checked with the `ring` provider's algorithms, the
//! only crypto provider this workspace builds (see the workspace `Cargo.toml`).

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::collections::HashMap;
use std::sync::Arc;

/// The ALPN protocol name of Occam's wire protocol.
pub const ALPN: &[u8] = b"occam/1";

/// Errors building TLS identities and configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration (a bad key, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM or DER input that does not hold what it should.
    #[error("{0}")]
    Invalid(String),
    /// quinn refused the TLS configuration.
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
}

/// The subject name bound to a node id.
pub fn node_name(node: u32) -> String {
    format!("node-{node}.occam")
}

/// A node's TLS identity: its certificate and private key (PKCS#8 DER).
#[derive(Clone)]
pub struct Identity {
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("cert_len", &self.cert.len()).finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed identity for node `node`.
    pub fn generate(node: u32) -> Result<Identity, TlsError> {
        let ck = rcgen::generate_simple_self_signed(vec![node_name(node)])?;
        Ok(Identity { cert: ck.cert.der().to_vec(), key: ck.signing_key.serialize_der() })
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert.clone())]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// The pinned certificates of a cluster's nodes. Clones share one set, which grows when the
/// cluster file lists a new node ([`PinnedCerts::add`]): the TLS verifiers built from it
/// accept the new node from then on.
#[derive(Clone, Debug, Default)]
pub struct PinnedCerts {
    inner: Arc<RwLock<Pins>>,
}

#[derive(Debug, Default)]
struct Pins {
    by_cert: HashMap<Vec<u8>, u32>,
    by_node: HashMap<u32, Vec<u8>>,
}

impl PinnedCerts {
    /// Pins `(node id, certificate DER)` pairs; a certificate or id listed twice is refused.
    pub fn new(certs: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Result<PinnedCerts, TlsError> {
        let p = PinnedCerts::default();
        for (node, cert) in certs {
            p.add(node, cert)?;
        }
        Ok(p)
    }

    /// Pins `cert` for `node`. Pinning a node's own certificate again is a no-op; another
    /// certificate for a pinned node, or a certificate pinned for another node, is refused.
    pub fn add(&self, node: u32, cert: Vec<u8>) -> Result<(), TlsError> {
        let mut p = self.inner.write();
        match (p.by_node.get(&node), p.by_cert.get(&cert)) {
            (None, None) => {
                p.by_cert.insert(cert.clone(), node);
                p.by_node.insert(node, cert);
                Ok(())
            }
            (Some(c), Some(&n)) if *c == cert && n == node => Ok(()),
            _ => Err(TlsError::Invalid(format!("node {node}: its id or certificate is listed twice"))),
        }
    }

    /// The node whose pinned certificate is `cert`.
    pub fn node_of(&self, cert: &[u8]) -> Option<u32> {
        self.inner.read().by_cert.get(cert).copied()
    }

    /// The pinned certificate of `node`.
    pub fn cert_of(&self, node: u32) -> Option<Vec<u8>> {
        self.inner.read().by_node.get(&node).cloned()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unknown(what: &str) -> rustls::Error {
    rustls::Error::General(format!("{what} certificate is not pinned in the cluster config"))
}

/// The handshake-signature methods both verifiers share: checked with the provider's
/// algorithms (pinning replaces the chain check, not the proof that the peer holds the key).
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// Accepts exactly one pinned certificate: the server a client or node meant to reach.
#[derive(Debug)]
struct PinnedServer {
    expected: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match end_entity.as_ref() == self.expected.as_slice() {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(unknown("the server's")),
        }
    }

    handshake_signatures!();
}

/// Accepts no client certificate (a client) or a pinned node certificate (a peer node).
#[derive(Debug)]
struct PinnedClients {
    pinned: PinnedCerts,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.pinned.node_of(end_entity.as_ref()) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(unknown("the peer's")),
        }
    }

    handshake_signatures!();
}

/// The connection-level receive window of a pinned peer's connection to a node (raised from
/// [`CLIENT_RECEIVE_WINDOW`] once the handshake names the peer): Raft RPCs carry blocks.
pub const PEER_RECEIVE_WINDOW: u32 = 32 << 20;
/// The connection-level receive window a node gives a client's connection: with the client
/// frame limit ([`crate::transport::MAX_CLIENT_FRAME_LEN`]) it bounds what a client's
/// unfinished frames hold in the node (bytes the node has read, and bytes QUIC buffers).
pub const CLIENT_RECEIVE_WINDOW: u32 = 2 << 20;
/// What a node buffers in QUIC for one incoming connection's outgoing data (a client's
/// answers; a peer's Raft replies). With `limits.client_queue_bytes` it bounds what a client
/// that does not read costs.
pub const SERVER_SEND_WINDOW: u64 = 4 << 20;

/// Limits every connection runs under: few streams, bounded windows, an idle timeout.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    Arc::new(base_transport())
}

fn base_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(4u32.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((32u32 << 20).into());
    t.send_window(32 << 20);
    // A peer that vanished without closing is noticed within 5 s.
    t.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    t.max_idle_timeout(Some(std::time::Duration::from_secs(5).try_into().expect("5 s fits")));
    t
}

/// The server side of a node: its identity, accepting clients and pinned peers.
pub fn server_config(identity: &Identity, pinned: PinnedCerts) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedClients { pinned, provider: provider.clone() });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.private_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(server_transport_config());
    Ok(config)
}

/// [`transport_config`] for the connections a node accepts, clients' and peers' alike until
/// the handshake names a peer: one unidirectional stream (clients and node links send on one),
/// a small receive window (raised to [`PEER_RECEIVE_WINDOW`] for peers) and send window.
fn server_transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = base_transport();
    t.max_concurrent_uni_streams(1u32.into());
    t.receive_window(CLIENT_RECEIVE_WINDOW.into());
    t.send_window(SERVER_SEND_WINDOW);
    Arc::new(t)
}

/// The client side of a connection to a server whose certificate is `server_cert`: with
/// `identity`, a node dialling a peer (mutual TLS); without, a client.
pub fn client_config(server_cert: &[u8], identity: Option<&Identity>) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer { expected: server_cert.to_vec(), provider: provider.clone() });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain(), id.private_key())?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// The certificate a connection's peer presented, if any.
pub fn peer_cert(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| c.as_ref().to_vec())
}
