//! Addresses as the cluster file and the command line spell them.

use std::net::{SocketAddr, ToSocketAddrs};

/// Checks that `s` has the form `HOST:PORT` or `IP:PORT` (IPv6 in
/// brackets), without resolving it. Errors: a message for people.
pub fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved now, an IPv4 answer first (client
/// endpoints are IPv4 sockets). Errors: why not, for people (not
/// `HOST:PORT`, the resolver's error, no address).
pub fn resolve_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    check_host_port(s)?;
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "resolves to no address".into())
}
