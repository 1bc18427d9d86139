//! TLS through NBD_OPT_STARTTLS (spec "TLS support", FORCEDTLS mode) with a
//! CA made for the test and client certificates, driven by libnbd's clients
//! (`nbds://` URIs with `tls-certificates=DIR`, libnbd's layout: ca-cert.pem,
//! client-cert.pem, client-key.pem).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{TestServer, have_tool, output, run, sparse_image};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tessera_nbd::{MemoryDevice, MemoryExports, NbdOptions};

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "NBD test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let mut server_params = CertificateParams::default();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let mut client_params = CertificateParams::default();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "nbd test client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// The server side: the server certificate, and client certificates
/// required and verified against the CA.
fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    Arc::new(config)
}

/// libnbd's certificate directory; without the client files when `client`
/// is false.
fn cert_dir(pki: &Pki, dir: &Path, client: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), &pki.ca_pem).unwrap();
    if client {
        std::fs::write(dir.join("client-cert.pem"), &pki.client_cert_pem).unwrap();
        std::fs::write(dir.join("client-key.pem"), &pki.client_key_pem).unwrap();
    }
}

fn tls_server(pki: &Pki) -> TestServer {
    let exports = Arc::new(MemoryExports::new());
    exports.insert("disk", Arc::new(MemoryDevice::new(64 << 20, 4096)));
    let options = NbdOptions {
        tls: Some(server_config(pki)),
        tls_required: true,
        ..NbdOptions::default()
    };
    TestServer::start(exports, options)
}

#[test]
fn nbdinfo_and_nbdcopy_over_starttls_with_client_certificates() {
    if !have_tool("nbdinfo") || !have_tool("nbdcopy") {
        return;
    }
    let pki = make_pki();
    let server = tls_server(&pki);
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    cert_dir(&pki, &certs, true);
    let uri = format!(
        "nbds://{}/disk?tls-certificates={}",
        server.tcp,
        certs.display()
    );

    let info: serde_json::Value =
        serde_json::from_str(&run(Command::new("nbdinfo").args(["--json", &uri]))).unwrap();
    assert_eq!(info["TLS"], true);
    assert_eq!(info["exports"][0]["export-size"], 64 << 20);
    assert_eq!(
        info["exports"][0]["contexts"],
        serde_json::json!(["base:allocation"])
    );

    let image = work.path().join("image.raw");
    let contents = sparse_image(&image, 64 << 20);
    run(Command::new("nbdcopy").arg("--flush").arg(&image).arg(&uri));
    assert_eq!(server.device("disk").read_now(0, contents.len()), contents);
    let back = work.path().join("back.raw");
    run(Command::new("nbdcopy").arg(&uri).arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == contents,
        "nbdcopy out over TLS differs"
    );
    let map = run(Command::new("nbdinfo").args(["--map", &uri]));
    assert!(map.contains("hole,zero") && map.contains("data"), "{map}");
}

#[test]
fn without_tls_or_without_a_client_certificate_nothing_is_served() {
    if !have_tool("nbdinfo") {
        return;
    }
    let pki = make_pki();
    let server = tls_server(&pki);
    let work = tempfile::tempdir().unwrap();

    // Plain NBD: every option but STARTTLS and ABORT is refused.
    let plain = output(Command::new("nbdinfo").arg(server.uri("disk")));
    assert!(!plain.status.success());
    let mut raw = TcpStream::connect(server.tcp).unwrap();
    let mut greeting = [0u8; 18];
    raw.read_exact(&mut greeting).unwrap();
    raw.write_all(&3u32.to_be_bytes()).unwrap();
    let mut list = 0x49484156454F5054u64.to_be_bytes().to_vec();
    list.extend_from_slice(&3u32.to_be_bytes()); // NBD_OPT_LIST
    list.extend_from_slice(&0u32.to_be_bytes());
    raw.write_all(&list).unwrap();
    let mut reply = [0u8; 20];
    raw.read_exact(&mut reply).unwrap();
    // NBD_REP_ERR_TLS_REQD
    assert_eq!(
        u32::from_be_bytes(reply[12..16].try_into().unwrap()),
        0x8000_0005
    );

    // TLS, but no client certificate: the handshake fails.
    let no_client = work.path().join("ca-only");
    cert_dir(&pki, &no_client, false);
    let uri = format!(
        "nbds://{}/disk?tls-certificates={}",
        server.tcp,
        no_client.display()
    );
    assert!(!output(Command::new("nbdinfo").arg(&uri)).status.success());
    // Nothing was opened.
    assert_eq!(server.exports.opens("disk"), 0);

    // And a good client still gets in.
    let certs = work.path().join("certs");
    cert_dir(&pki, &certs, true);
    let uri = format!(
        "nbds://{}/disk?tls-certificates={}",
        server.tcp,
        certs.display()
    );
    run(Command::new("nbdinfo").arg(&uri));
}
