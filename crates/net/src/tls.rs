use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::NetError;
use crate::udp::BoundedGsoSocket;

/// Every certificate names this, and every client expects it: peers are found
/// by address, and trust comes from the cluster CA, not from DNS.
pub const SERVER_NAME: &str = "tessera";

fn cert_err(e: impl std::fmt::Display) -> NetError {
    NetError::Certificate(e.to_string())
}

/// The cluster's certificate authority. Whoever holds its key may join the
/// cluster as a node or client, so it stays on servers and admin machines.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

impl ClusterCa {
    pub fn generate(cluster_name: &str) -> Result<Self, NetError> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Tessera");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Tessera cluster CA {cluster_name}"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.clone().self_signed(&key).map_err(cert_err)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key,
            params,
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(cert_err)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key,
            params,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate good for both ends of a connection (nodes are
    /// servers to clients and clients of meta). Returns (cert PEM, key PEM).
    pub fn issue(&self, common_name: &str) -> Result<(String, String), NetError> {
        self.issue_for(common_name, &[])
    }

    /// As `issue`, also naming `names` (host names or IP addresses) for
    /// clients that check the server's name against the address they
    /// dialled (TLS on NBD: libnbd checks the URI's host). Returns (cert
    /// PEM, key PEM).
    pub fn issue_for(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<(String, String), NetError> {
        let issuer = self
            .params
            .clone()
            .self_signed(&self.key)
            .map_err(cert_err)?;
        let mut sans = vec![SERVER_NAME.to_string()];
        sans.extend(names.iter().cloned());
        let mut params = CertificateParams::new(sans).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Tessera");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params
            .signed_by(&key, &issuer, &self.key)
            .map_err(cert_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// What a process presents and trusts: its own certificate and key, and the
/// cluster CA that every peer must be signed by.
#[derive(Debug)]
pub struct Identity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| cert_err(format!("CA certificate: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(cert_err("certificate file holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| cert_err(format!("private key: {e}")))?;
        Ok(Identity { ca, chain, key })
    }

    /// A TLS server configuration for protocols other than the cluster's
    /// QUIC (NBD's STARTTLS): this identity's certificate, and client
    /// certificates required and checked against the cluster CA. TLS 1.2
    /// and 1.3, no ALPN.
    pub fn tls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(Arc::new(tls))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NetError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| cert_err(format!("CA certificate: {e}")))?;
        Ok(Arc::new(roots))
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![tessera_proto::ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }

    fn client_config(&self) -> Result<quinn::ClientConfig, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![tessera_proto::ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }
}

/// The largest UDP payload a packet may grow to, in bytes: one whole send
/// (`udp::MAX_SEND_PAYLOAD`). Loopback carries it; jumbo frames carry
/// 8,972 and Ethernet 1,472 (IPv4), and MTU discovery finds those.
const MAX_UDP_PAYLOAD: u16 = crate::udp::MAX_SEND_PAYLOAD as u16;

/// The smallest UDP payload every QUIC path carries, in bytes (RFC 9000).
const MIN_UDP_PAYLOAD: u16 = 1200;

/// Packets grow to at most this by default, in bytes. At the full 64 KiB a
/// 300 MiB put through the CLI peaked at 163 MiB of RSS against about 90
/// at 1,452 (`tests/streaming.rs`, larger congestion windows hold more
/// unacknowledged data) and 3-11% of datagrams were lost on loopback;
/// at 16 KiB it came within 1 MiB of the test's 128 MiB bound; 8,952
/// (jumbo frames) keeps most of the saving in CPU per byte (BENCHMARKS.md).
const DEFAULT_UDP_PAYLOAD: u16 = 8_952;

/// `DEFAULT_UDP_PAYLOAD`, or the cap that `TESSERA_QUIC_MAX_UDP_PAYLOAD`
/// sets (bytes, 1,200-65,507): for a network whose losses keep black-hole
/// detection busy, and to measure what packet size buys. Read once.
fn max_udp_payload() -> u16 {
    static CAP: OnceLock<u16> = OnceLock::new();
    *CAP.get_or_init(|| {
        let Ok(asked) = std::env::var("TESSERA_QUIC_MAX_UDP_PAYLOAD") else {
            return DEFAULT_UDP_PAYLOAD;
        };
        match asked.parse::<u16>() {
            Ok(n) if (MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&n) => n,
            _ => {
                tracing::warn!(
                    value = %asked,
                    "TESSERA_QUIC_MAX_UDP_PAYLOAD must be {MIN_UDP_PAYLOAD}-{MAX_UDP_PAYLOAD} bytes; \
                     using {DEFAULT_UDP_PAYLOAD}"
                );
                DEFAULT_UDP_PAYLOAD
            }
        }
    })
}

/// Windows sized for fragment streams of several MiB on fast links; idle
/// timeout and keep-alives so a dead peer is noticed in seconds.
///
/// Packet size: every connection starts at 1,200-byte packets, which every
/// QUIC path carries (quinn's default initial and minimum MTU), and
/// discovers upward to `MAX_UDP_PAYLOAD` with probes; when packets of the
/// size found are lost in bursts (a route changed), black-hole detection
/// falls back to 1,200 and discovery tries again a minute later.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(max_udp_payload());
    t.mtu_discovery_config(Some(mtu));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        10_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(256 << 20));
    t.send_window(256 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

/// Bytes of kernel buffer asked for on each QUIC socket, each way.
const SOCKET_BUFFER: usize = 8 << 20;

/// Asks for `SOCKET_BUFFER` bytes of send and receive buffer. The kernel's
/// default (about 208 KiB) holds a few milliseconds of a fast flow: when
/// the receiving process is briefly off the CPU, datagrams are dropped,
/// the sender's congestion control backs off, and quinn's black-hole
/// detection takes the losses for a path that cannot carry large packets
/// and drops back to 1200 bytes. Root may exceed `net.core.rmem_max` and
/// `wmem_max`; other users get at most those, and a warning says to raise
/// them (deploy/sysctl/90-tessera.conf).
fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(socket, SOCKET_BUFFER);
    }
    if sockopt::set_socket_send_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(socket, SOCKET_BUFFER);
    }
    // Linux reports twice what was granted (the doubling covers its own
    // bookkeeping): compare against what was asked for.
    let recv = sockopt::socket_recv_buffer_size(socket).unwrap_or(0);
    if recv < SOCKET_BUFFER {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                granted = recv,
                wanted = SOCKET_BUFFER,
                "the kernel limits UDP receive buffers: QUIC throughput suffers under load; \
                 raise net.core.rmem_max and net.core.wmem_max to at least {SOCKET_BUFFER} \
                 (see deploy/sysctl/90-tessera.conf)"
            );
        });
    }
}

/// A QUIC endpoint: always a client, a server too when built with `server`.
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
}

/// How long a connection attempt may take before the peer counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Endpoint {
    /// An endpoint that accepts connections on `addr` and makes its own.
    /// Errors: `Bind` when the address is taken or not local, `Tls` and
    /// `Certificate` for an unusable identity.
    pub fn server(addr: SocketAddr, identity: &Identity) -> Result<Self, NetError> {
        Self::bind(addr, Some(identity.server_config()?), identity)
    }

    /// An endpoint that only makes connections, from an ephemeral port.
    pub fn client(identity: &Identity) -> Result<Self, NetError> {
        Self::bind(([0, 0, 0, 0], 0).into(), None, identity)
    }

    fn bind(
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
        identity: &Identity,
    ) -> Result<Self, NetError> {
        let bind_err = |source| NetError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
        enlarge_socket_buffers(&socket);
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
        let socket = Arc::new(BoundedGsoSocket::new(
            runtime.wrap_udp_socket(socket).map_err(bind_err)?,
        ));
        let mut config = quinn::EndpointConfig::default();
        // Tells peers how large a packet this endpoint takes (the default,
        // 1,472, caps every path at Ethernet's size whatever it carries).
        config
            .max_udp_payload_size(max_udp_payload())
            .map_err(|e| bind_err(std::io::Error::other(e.to_string())))?;
        let mut inner = quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
            .map_err(bind_err)?;
        inner.set_default_client_config(identity.client_config()?);
        Ok(Endpoint { inner })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.inner
            .local_addr()
            .map_err(|e| NetError::Tls(e.to_string()))
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
        let connect_err = |reason: String| NetError::Connect { addr, reason };
        let connecting = self
            .inner
            .connect(addr, SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(connect_err(e.to_string())),
            Err(_) => Err(connect_err(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }

    pub(crate) fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.inner.close(quinn::VarInt::from_u32(0), b"shutdown");
    }
}
