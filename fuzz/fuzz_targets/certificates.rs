//! Certificates and keys read from disk (the cluster CA, node and client
//! identities): PEM that is damaged or not what it claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_net::{ClusterCa, Identity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\u{0}');
    let (a, b, c) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let _ = Identity::from_pem(a, b, c);
    let _ = ClusterCa::from_pem(a, b);
});
