//! The NBD wire format: constants and pure encodings/decodings, no I/O.
//!
//! Every value comes from the NBD protocol specification
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>),
//! section "Values" unless noted. All integers are big-endian ("Conventions").

// "Newstyle negotiation": the server's greeting and the option header.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// "Fixed newstyle negotiation": the magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

// "Handshake flags" and "Client flags".
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// "Transmission flags".
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// "Option types".
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// "Option reply types".
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// `NBD_REP_INFO` information types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// "Request message" and "Request types".
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const REQUEST_HEADER_LEN: usize = 28;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// "Command flags".
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// "Simple reply message", "Structured reply chunk message", "Structured
// reply flags" and "Structured reply types".
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

// "Error values".
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const ESHUTDOWN: u32 = 108;

// "`base:allocation` metadata context".
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// "Conventions": strings (export names, messages) MUST be no longer than
/// 4096 bytes.
pub const MAX_STRING_LEN: usize = 4096;

/// One option from the client ("Newstyle negotiation"): the header that
/// follows `IHAVEOPT`.
#[derive(Debug, Clone, Copy)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

impl OptionHeader {
    /// Decodes the 16 bytes `IHAVEOPT`, option, length; `None` on a wrong
    /// magic.
    pub fn parse(bytes: &[u8; 16]) -> Option<Self> {
        let (magic, rest) = bytes.split_at(8);
        if u64::from_be_bytes(magic.try_into().ok()?) != IHAVEOPT {
            return None;
        }
        Some(Self {
            option: u32::from_be_bytes(rest[..4].try_into().ok()?),
            len: u32::from_be_bytes(rest[4..].try_into().ok()?),
        })
    }
}

/// One option reply ("Fixed newstyle negotiation"): magic, option, reply
/// type, length, data.
pub fn option_reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// An error message as option reply data or error chunk text, cut to the
/// spec's string limit on a character boundary.
pub fn message_bytes(message: &str) -> &[u8] {
    let mut end = message.len().min(MAX_STRING_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message.as_bytes()[..end]
}

/// Why option data could not be decoded: answered `NBD_REP_ERR_INVALID`
/// with this text.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A cursor over option data that refuses to read past its end.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.data.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A length-prefixed (32 bits) string.
    fn string(&mut self, what: &'static str) -> Result<String, Malformed> {
        let len = self.u32(what)? as usize;
        parse_string(self.take(len, what)?, what)
    }
    fn finish(self, what: &'static str) -> Result<(), Malformed> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(Malformed(what))
        }
    }
}

/// A string as "Conventions" define it: UTF-8, no NUL, at most 4096 bytes.
pub fn parse_string(bytes: &[u8], what: &'static str) -> Result<String, Malformed> {
    if bytes.len() > MAX_STRING_LEN || bytes.contains(&0) {
        return Err(Malformed(what));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed(what))
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO` ("Option types"): export
/// name and the information types the client asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

impl InfoRequest {
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        let mut c = Cursor { data };
        let name = c.string("export name length exceeds the option data")?;
        let count = c.u16("missing number of information requests")?;
        let requests = (0..count)
            .map(|_| c.u16("fewer information requests than announced"))
            .collect::<Result<Vec<_>, _>>()?;
        c.finish("trailing bytes after the information requests")?;
        Ok(Self { name, requests })
    }
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`
/// ("Option types"): export name and queries.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub export: String,
    pub queries: Vec<String>,
}

impl MetaContextRequest {
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        let mut c = Cursor { data };
        let export = c.string("export name length exceeds the option data")?;
        let count = c.u32("missing number of queries")?;
        // Each query takes at least its 4-byte length: a count beyond what
        // the data can hold is refused before allocating for it.
        if count as usize > c.data.len() / 4 {
            return Err(Malformed(
                "more queries announced than the option data holds",
            ));
        }
        let queries = (0..count)
            .map(|_| c.string("query length exceeds the option data"))
            .collect::<Result<Vec<_>, _>>()?;
        c.finish("trailing bytes after the queries")?;
        Ok(Self { export, queries })
    }
}

/// A request header ("Request message"), without the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl RequestHeader {
    /// Decodes the 28 request bytes; `None` on a wrong magic.
    pub fn parse(b: &[u8; REQUEST_HEADER_LEN]) -> Option<Self> {
        let magic = u32::from_be_bytes(b[0..4].try_into().ok()?);
        if magic != REQUEST_MAGIC {
            return None;
        }
        Some(Self {
            flags: u16::from_be_bytes(b[4..6].try_into().ok()?),
            kind: u16::from_be_bytes(b[6..8].try_into().ok()?),
            cookie: u64::from_be_bytes(b[8..16].try_into().ok()?),
            offset: u64::from_be_bytes(b[16..24].try_into().ok()?),
            len: u32::from_be_bytes(b[24..28].try_into().ok()?),
        })
    }
}

/// "Simple reply message": magic, error, cookie (the data of a successful
/// read follows).
pub fn simple_reply(cookie: u64, error: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out
}

/// "Structured reply chunk message" header: magic, flags, type, cookie,
/// payload length (the payload follows).
pub fn chunk_header(flags: u16, reply_type: u16, cookie: u64, payload_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk ("Structured reply types"): error,
/// message length, message.
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let message = message_bytes(message);
    let mut out = chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + message.len() as u32,
    );
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk ("Structured reply types"):
/// context id, then (length, status flags) per extent.
pub fn block_status_chunk(cookie: u64, context_id: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let payload = 4 + 8 * extents.len();
    let mut out = chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        payload as u32,
    );
    out.extend_from_slice(&context_id.to_be_bytes());
    for (len, flags) in extents {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn info_request_round_trip_and_refusals() {
        let mut data = string("vol");
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_NAME.to_be_bytes());
        assert_eq!(
            InfoRequest::parse(&data),
            Ok(InfoRequest {
                name: "vol".into(),
                requests: vec![INFO_BLOCK_SIZE, INFO_NAME]
            })
        );
        assert!(InfoRequest::parse(&data[..data.len() - 1]).is_err());
        let mut long = data.clone();
        long.push(0);
        assert!(InfoRequest::parse(&long).is_err());
        // A name length pointing past the data.
        let mut lying = 1000u32.to_be_bytes().to_vec();
        lying.extend_from_slice(b"vol\0\0");
        assert!(InfoRequest::parse(&lying).is_err());
        assert!(InfoRequest::parse(&[]).is_err());
    }

    #[test]
    fn meta_context_request_parses_and_refuses_huge_counts() {
        let mut data = string("vol");
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(&string("base:allocation"));
        data.extend_from_slice(&string("qemu:dirty-bitmap:x"));
        let parsed = MetaContextRequest::parse(&data).unwrap();
        assert_eq!(parsed.export, "vol");
        assert_eq!(parsed.queries, ["base:allocation", "qemu:dirty-bitmap:x"]);
        let mut huge = string("vol");
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(MetaContextRequest::parse(&huge).is_err());
    }

    #[test]
    fn strings_refuse_nul_and_bad_utf8() {
        assert!(parse_string(b"a\0b", "x").is_err());
        assert!(parse_string(&[0xff, 0xfe], "x").is_err());
        assert!(parse_string(&[b'a'; MAX_STRING_LEN + 1], "x").is_err());
        assert_eq!(message_bytes(&"é".repeat(3000)).len(), 4096);
    }

    #[test]
    fn request_header_needs_the_magic() {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[24..28].copy_from_slice(&4096u32.to_be_bytes());
        let h = RequestHeader::parse(&b).unwrap();
        assert_eq!((h.kind, h.cookie, h.len), (CMD_WRITE, 7, 4096));
        b[0] ^= 1;
        assert!(RequestHeader::parse(&b).is_none());
    }
}
