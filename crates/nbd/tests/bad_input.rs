//! Bad input over raw TCP: the server answers in protocol form where the
//! spec lets it, otherwise drops only that connection, and keeps serving
//! the others. Values are written out from the spec
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>),
//! not taken from the crate, so the tests check the wire against the spec.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::TestServer;
use tessera_nbd::NbdOptions;

const NBDMAGIC: u64 = 0x4e42444d41474943;
const IHAVEOPT: u64 = 0x49484156454F5054;
const OPTION_REPLY_MAGIC: u64 = 0x3e889045565a9;
const REQUEST_MAGIC: u32 = 0x25609513;
const SIMPLE_REPLY_MAGIC: u32 = 0x67446698;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_LIST: u32 = 3;
const OPT_STARTTLS: u32 = 5;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const REP_ERR_INVALID: u32 = 0x8000_0003;
const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const EINVAL: u32 = 22;

struct Raw {
    s: TcpStream,
}

impl Raw {
    /// Connects and completes the greeting with the given client flags.
    fn connect_with_flags(server: &TestServer, flags: u32) -> Raw {
        let s = TcpStream::connect(server.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw { s };
        let mut greeting = [0u8; 18];
        raw.s.read_exact(&mut greeting).unwrap();
        assert_eq!(
            u64::from_be_bytes(greeting[0..8].try_into().unwrap()),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(greeting[8..16].try_into().unwrap()),
            IHAVEOPT
        );
        // NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES
        assert_eq!(u16::from_be_bytes([greeting[16], greeting[17]]), 3);
        raw.s.write_all(&flags.to_be_bytes()).unwrap();
        raw
    }

    fn connect(server: &TestServer) -> Raw {
        Self::connect_with_flags(server, 3)
    }

    fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.s.write_all(&m).unwrap();
    }

    /// One option reply: (option, reply type, data).
    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(
            u64::from_be_bytes(h[0..8].try_into().unwrap()),
            OPTION_REPLY_MAGIC
        );
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).unwrap();
        (
            u32::from_be_bytes(h[8..12].try_into().unwrap()),
            u32::from_be_bytes(h[12..16].try_into().unwrap()),
            data,
        )
    }

    /// Sends an option and returns the reply types up to the final one.
    fn exchange(&mut self, option: u32, data: &[u8]) -> Vec<u32> {
        self.send_option(option, data);
        let mut types = Vec::new();
        loop {
            let (echoed, reply_type, _) = self.option_reply();
            assert_eq!(echoed, option);
            types.push(reply_type);
            if reply_type != REP_INFO && reply_type != REP_SERVER && reply_type != 4 {
                return types;
            }
        }
    }

    fn go(&mut self, name: &str) {
        let types = self.exchange(OPT_GO, &go_data(name));
        assert_eq!(types.last(), Some(&REP_ACK), "{types:x?}");
    }

    fn request(&mut self, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) {
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&cookie.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    /// A simple reply: (error, cookie).
    fn simple_reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(
            u32::from_be_bytes(h[0..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    /// Reads one 4 KiB block with a simple reply.
    fn read_block(&mut self, cookie: u64, offset: u64) -> Vec<u8> {
        self.request(0, CMD_READ, cookie, offset, 4096);
        assert_eq!(self.simple_reply(), (0, cookie));
        let mut data = vec![0u8; 4096];
        self.s.read_exact(&mut data).unwrap();
        data
    }

    /// True once the server closed the connection (EOF or reset), with
    /// nothing else sent before.
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.s.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        }
    }
}

fn go_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d
}

/// A connection in transmission on `disk` that must keep working while
/// others misbehave.
fn bystander(server: &TestServer) -> Raw {
    server.device("disk").write_now(0, &[0x5a; 4096]);
    let mut raw = Raw::connect(server);
    raw.go("disk");
    assert_eq!(raw.read_block(1, 0), [0x5a; 4096]);
    raw
}

#[test]
fn wrong_option_magic_drops_only_that_connection() {
    let server = TestServer::standard();
    let mut other = bystander(&server);
    let mut bad = Raw::connect(&server);
    bad.s.write_all(b"GARBAGE!GARBAGE!").unwrap();
    assert!(bad.closed_by_server());
    assert_eq!(other.read_block(2, 0), [0x5a; 4096]);
}

#[test]
fn unknown_client_flags_drop_the_connection() {
    let server = TestServer::standard();
    let mut bad = Raw::connect_with_flags(&server, 0x80);
    assert!(bad.closed_by_server());
}

#[test]
fn truncated_option_drops_only_that_connection() {
    let server = TestServer::standard();
    let mut other = bystander(&server);
    let mut bad = Raw::connect(&server);
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&OPT_GO.to_be_bytes());
    m.extend_from_slice(&100u32.to_be_bytes());
    m.extend_from_slice(&[0u8; 10]);
    bad.s.write_all(&m).unwrap();
    bad.s.shutdown(Shutdown::Write).unwrap();
    assert!(bad.closed_by_server());
    assert_eq!(other.read_block(2, 0), [0x5a; 4096]);
}

#[test]
fn over_long_option_is_refused_and_the_connection_goes_on() {
    let server = TestServer::standard();
    let mut raw = Raw::connect(&server);
    assert_eq!(
        raw.exchange(OPT_GO, &vec![b'x'; 1 << 20]),
        [REP_ERR_TOO_BIG]
    );
    raw.go("disk");
    assert_eq!(raw.read_block(1, 4096), [0; 4096]);
}

#[test]
fn unknown_options_get_err_unsup_and_bad_lengths_err_invalid() {
    let server = TestServer::standard();
    let mut raw = Raw::connect(&server);
    assert_eq!(raw.exchange(99, b"whatever"), [REP_ERR_UNSUP]);
    assert_eq!(raw.exchange(11, &[]), [REP_ERR_UNSUP]); // NBD_OPT_EXTENDED_HEADERS
    // A name length pointing past the option data.
    let mut lying = 1000u32.to_be_bytes().to_vec();
    lying.extend_from_slice(b"disk\0\0");
    assert_eq!(raw.exchange(OPT_GO, &lying), [REP_ERR_INVALID]);
    // Announcing two information requests and sending one.
    let mut short = go_data("disk");
    short.truncate(short.len() - 2);
    short.extend_from_slice(&2u16.to_be_bytes());
    short.extend_from_slice(&3u16.to_be_bytes());
    assert_eq!(raw.exchange(OPT_GO, &short), [REP_ERR_INVALID]);
    assert_eq!(raw.exchange(OPT_LIST, b"x"), [REP_ERR_INVALID]);
    assert_eq!(raw.exchange(OPT_STRUCTURED_REPLY, b"x"), [REP_ERR_INVALID]);
    // Meta contexts need structured replies first.
    let mut meta = (4u32).to_be_bytes().to_vec();
    meta.extend_from_slice(b"disk");
    meta.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(raw.exchange(OPT_SET_META_CONTEXT, &meta), [REP_ERR_INVALID]);
    // No TLS configured: STARTTLS is unsupported (the spec's NOTLS mode).
    assert_eq!(raw.exchange(OPT_STARTTLS, &[]), [REP_ERR_UNSUP]);
    // LIST answers one NBD_REP_SERVER per export, then ACK.
    assert_eq!(
        raw.exchange(OPT_LIST, &[]),
        [REP_SERVER, REP_SERVER, REP_SERVER, REP_ACK]
    );
    // After all that, the connection still works.
    raw.go("disk");
    assert_eq!(raw.read_block(1, 0), [0; 4096]);
}

#[test]
fn unknown_export_gets_err_unknown_with_a_message() {
    let server = TestServer::standard();
    let mut raw = Raw::connect(&server);
    raw.send_option(OPT_GO, &go_data("nope"));
    let (option, reply_type, message) = raw.option_reply();
    assert_eq!((option, reply_type), (OPT_GO, REP_ERR_UNKNOWN));
    assert!(String::from_utf8_lossy(&message).contains("nope"));
    raw.go("disk");
    // NBD_OPT_EXPORT_NAME cannot answer an error: the server closes.
    let mut other = Raw::connect(&server);
    other.send_option(OPT_EXPORT_NAME, b"nope");
    assert!(other.closed_by_server());
}

#[test]
fn export_name_answers_size_and_flags_with_or_without_zeroes() {
    let server = TestServer::standard();
    for (client_flags, answer_len) in [(3u32, 10usize), (1, 134)] {
        let mut raw = Raw::connect_with_flags(&server, client_flags);
        raw.send_option(OPT_EXPORT_NAME, b"disk@snap");
        let mut answer = vec![0u8; answer_len];
        raw.s.read_exact(&mut answer).unwrap();
        assert_eq!(
            u64::from_be_bytes(answer[0..8].try_into().unwrap()),
            64 << 20
        );
        let flags = u16::from_be_bytes([answer[8], answer[9]]);
        // HAS_FLAGS, READ_ONLY, SEND_FLUSH, CAN_MULTI_CONN.
        assert_eq!(flags, 1 | 2 | 4 | 0x100);
        assert!(answer[10..].iter().all(|&b| b == 0));
        assert_eq!(raw.read_block(7, 4 << 20), [0xa5; 4096]);
        raw.request(0, CMD_DISC, 8, 0, 0);
        assert!(raw.closed_by_server());
    }
}

#[test]
fn bad_requests_get_errors_and_garbage_drops_only_that_connection() {
    let server = TestServer::standard();
    let mut other = bystander(&server);

    let mut raw = Raw::connect(&server);
    raw.go("disk");
    // Unknown command (NBD_CMD_CACHE is not offered) and unknown flags.
    raw.request(0, 5, 10, 0, 4096);
    assert_eq!(raw.simple_reply(), (EINVAL, 10));
    raw.request(0x8000, CMD_READ, 11, 0, 4096);
    assert_eq!(raw.simple_reply(), (EINVAL, 11));
    // A write over the maximum payload: the server skips the payload and
    // refuses it, and the stream stays in step.
    let len = (32 << 20) + 4096;
    raw.request(0, CMD_WRITE, 12, 0, len);
    raw.s.write_all(&vec![1u8; len as usize]).unwrap();
    assert_eq!(raw.simple_reply(), (EINVAL, 12));
    assert_eq!(raw.read_block(13, 0), [0x5a; 4096]);
    // Garbage request magic: dropped.
    raw.s.write_all(&[0xffu8; 28]).unwrap();
    assert!(raw.closed_by_server());

    // A write whose payload never arrives in full: dropped, nothing written.
    let mut truncated = Raw::connect(&server);
    truncated.go("disk");
    truncated.request(0, CMD_WRITE, 1, 8192, 4096);
    truncated.s.write_all(&[9u8; 100]).unwrap();
    truncated.s.shutdown(Shutdown::Write).unwrap();
    assert!(truncated.closed_by_server());
    assert_eq!(server.device("disk").read_now(8192, 4096), [0; 4096]);

    // A request header cut short.
    let mut short = Raw::connect(&server);
    short.go("disk");
    short.s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    short.s.shutdown(Shutdown::Write).unwrap();
    assert!(short.closed_by_server());

    assert_eq!(other.read_block(3, 0), [0x5a; 4096]);
    // All connections to `disk` shared one device, closed only when the
    // last one ends.
    assert_eq!(server.exports.opens("disk"), 1);
    other.request(0, CMD_DISC, 4, 0, 0);
    assert!(other.closed_by_server());
    for _ in 0..100 {
        if server
            .device("disk")
            .counters()
            .closes
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the shared device was not closed after the last connection ended");
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let options = NbdOptions {
        handshake_timeout: Duration::from_millis(300),
        ..NbdOptions::default()
    };
    let server = TestServer::standard_with(options);
    let mut silent = Raw::connect(&server);
    let started = std::time::Instant::now();
    assert!(silent.closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Transmission has no such limit: a connection idle past it still works.
    let mut idle = Raw::connect(&server);
    idle.go("disk");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(idle.read_block(1, 0), [0; 4096]);
}

/// A device with a bug: reads at offset 0 panic.
struct PanicsOnRead(tessera_nbd::MemoryDevice);

#[async_trait::async_trait]
impl tessera_nbd::BlockDevice for PanicsOnRead {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, tessera_nbd::DeviceError> {
        assert!(offset != 0, "a device bug");
        self.0.read(offset, len).await
    }
    async fn write(
        &self,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    ) -> Result<(), tessera_nbd::DeviceError> {
        self.0.write(offset, data, fua).await
    }
    async fn flush(&self) -> Result<(), tessera_nbd::DeviceError> {
        self.0.flush().await
    }
    async fn trim(&self, offset: u64, len: u32) -> Result<(), tessera_nbd::DeviceError> {
        self.0.trim(offset, len).await
    }
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), tessera_nbd::DeviceError> {
        self.0.write_zeroes(offset, len, no_hole, fua).await
    }
    async fn block_status(
        &self,
        offset: u64,
        len: u32,
    ) -> Result<Vec<tessera_nbd::Extent>, tessera_nbd::DeviceError> {
        self.0.block_status(offset, len).await
    }
    async fn close(&self) {}
}

struct OneBuggyExport;

#[async_trait::async_trait]
impl tessera_nbd::Exports for OneBuggyExport {
    async fn list(&self) -> Result<Vec<tessera_nbd::ExportSummary>, tessera_nbd::DeviceError> {
        Ok(Vec::new())
    }
    async fn open(
        &self,
        _name: &str,
    ) -> Result<std::sync::Arc<dyn tessera_nbd::BlockDevice>, tessera_nbd::DeviceError> {
        Ok(std::sync::Arc::new(PanicsOnRead(
            tessera_nbd::MemoryDevice::new(1 << 20, 4096),
        )))
    }
}

#[test]
fn a_panicking_device_call_is_answered_eio() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tessera_nbd::NbdServer::new(std::sync::Arc::new(OneBuggyExport), NbdOptions::default());
    runtime.spawn(async move { server.serve_tcp(listener).await });
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Raw { s };
    let mut greeting = [0u8; 18];
    raw.s.read_exact(&mut greeting).unwrap();
    raw.s.write_all(&3u32.to_be_bytes()).unwrap();
    raw.go("any");
    raw.request(0, CMD_READ, 1, 0, 4096);
    assert_eq!(raw.simple_reply(), (5, 1)); // NBD_EIO
    // The connection goes on.
    assert_eq!(raw.read_block(2, 4096), [0; 4096]);
    runtime.shutdown_background();
}
