//! Who is at the other end of a connection: the roles a certificate's
//! common name (CN) gives its holder, and the identity a server hands to
//! its handlers.

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

/// The roles a certificate's common name gives its holder. The cluster CA
/// issues every certificate, so the CN is as trustworthy as the CA's key.
pub mod role {
    /// A meta replica: may speak Raft to the others and change the group.
    pub const META: &str = "meta";
    /// A storage node.
    pub const NODE: &str = "node";
    /// A client: the CLI, gateways, mounts, the repairer.
    pub const CLIENT: &str = "client";
}

/// The peer of a connection, as its certificate (checked against the
/// cluster CA during the handshake) names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub addr: SocketAddr,
    /// The common name of the peer's certificate (its role: see `role`),
    /// `None` when it has none or it does not parse.
    pub role: Option<String>,
}

impl PeerIdentity {
    /// The peer at `addr` that presented `chain` (its own certificate
    /// first).
    pub fn from_chain(addr: SocketAddr, chain: &[CertificateDer<'_>]) -> Self {
        PeerIdentity {
            addr,
            role: chain.first().and_then(|c| common_name(c.as_ref())),
        }
    }

    /// The peer of `conn` (whose handshake is done).
    pub fn of(conn: &quinn::Connection) -> Self {
        let identity = conn.peer_identity();
        let chain = identity
            .as_ref()
            .and_then(|i| i.downcast_ref::<Vec<CertificateDer<'static>>>())
            .map(Vec::as_slice)
            .unwrap_or_default();
        Self::from_chain(conn.remote_address(), chain)
    }

    /// Whether the peer's certificate gives it `role` (one of `role`'s).
    pub fn has_role(&self, role: &str) -> bool {
        self.role.as_deref() == Some(role)
    }

    /// The role for messages: the CN, or that there is none.
    pub fn role_name(&self) -> &str {
        self.role.as_deref().unwrap_or("(no common name)")
    }
}

/// The subject's common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterCa;
    use rustls_pki_types::pem::PemObject;

    fn peer_with(ca: &ClusterCa, cn: &str) -> PeerIdentity {
        let (cert, _key) = ca.issue(cn).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        PeerIdentity::from_chain(([127, 0, 0, 1], 7000).into(), &[der])
    }

    #[test]
    fn a_certificates_common_name_is_its_role() {
        let ca = ClusterCa::generate("test").unwrap();
        let meta = peer_with(&ca, role::META);
        assert!(meta.has_role(role::META));
        assert!(!meta.has_role(role::CLIENT));
        for other in [role::NODE, role::CLIENT, "Meta", "meta ", "tessera nbd"] {
            let p = peer_with(&ca, other);
            assert!(!p.has_role(role::META), "{other:?} passed as meta");
            assert_eq!(p.role.as_deref(), Some(other));
        }
    }

    #[test]
    fn no_certificate_or_garbage_has_no_role() {
        let addr = ([127, 0, 0, 1], 7000).into();
        let none = PeerIdentity::from_chain(addr, &[]);
        assert_eq!(none.role, None);
        assert!(!none.has_role(role::META));
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(!PeerIdentity::from_chain(addr, &[junk]).has_role(role::META));
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
