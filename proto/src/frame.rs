use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProtoError;

/// Bumped on any incompatible change to frames or messages.
pub const PROTOCOL_VERSION: u8 = 13;
/// Negotiated in the TLS handshake: a peer that speaks another major version
/// fails at connection time, before any frame is exchanged.
pub const ALPN: &[u8] = b"tessera/1";
pub const MAGIC: [u8; 2] = *b"TS";
/// magic (2) + version (1) + kind (1) + payload length (u32, big-endian).
pub const FRAME_HEADER_LEN: usize = 8;
/// Control messages only: bulk data travels as a raw body after its frame.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Request = 1,
    Response = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub len: usize,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<Self, ProtoError> {
        if bytes[..2] != MAGIC {
            return Err(ProtoError::BadMagic([bytes[0], bytes[1]]));
        }
        if bytes[2] != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion(bytes[2]));
        }
        let kind = match bytes[3] {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            k => return Err(ProtoError::UnknownKind(k)),
        };
        let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(ProtoError::FrameTooLarge(len));
        }
        Ok(FrameHeader { kind, len })
    }
}

/// Header and payload of one frame, ready to write.
pub fn encode_frame<T: Serialize>(kind: FrameKind, msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    let mut out = postcard::to_extend(msg, std::mem::take(&mut out))
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let len = out.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::FrameTooLarge(len));
    }
    out[..2].copy_from_slice(&MAGIC);
    out[2] = PROTOCOL_VERSION;
    out[3] = kind as u8;
    out[4..8].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a payload, refusing trailing bytes: a frame holds exactly one message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtoError> {
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after message",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetaRequest, NodeRequest};
    use tessera_types::ChunkId;

    #[test]
    fn round_trip() {
        let req = NodeRequest::GetFragment {
            chunk: ChunkId([3; 16]),
            index: 2,
            request: Some(tessera_types::RequestId(7)),
        };
        let frame = encode_frame(FrameKind::Request, &req).unwrap();
        let header = FrameHeader::parse(frame[..8].try_into().unwrap()).unwrap();
        assert_eq!(
            header,
            FrameHeader {
                kind: FrameKind::Request,
                len: frame.len() - 8
            }
        );
        let back: NodeRequest = decode_payload(&frame[8..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn refuses_bad_headers() {
        let good = encode_frame(
            FrameKind::Request,
            &MetaRequest::Query(crate::MetaQuery::ListBuckets),
        )
        .unwrap();
        let mut h: [u8; 8] = good[..8].try_into().unwrap();
        h[0] = b'X';
        assert!(matches!(
            FrameHeader::parse(&h),
            Err(ProtoError::BadMagic(_))
        ));
        let mut h: [u8; 8] = good[..8].try_into().unwrap();
        h[2] = PROTOCOL_VERSION + 1;
        assert!(matches!(
            FrameHeader::parse(&h),
            Err(ProtoError::UnsupportedVersion(v)) if v == PROTOCOL_VERSION + 1
        ));
        let mut h: [u8; 8] = good[..8].try_into().unwrap();
        h[3] = 7;
        assert!(matches!(
            FrameHeader::parse(&h),
            Err(ProtoError::UnknownKind(7))
        ));
        let mut h: [u8; 8] = good[..8].try_into().unwrap();
        h[4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            FrameHeader::parse(&h),
            Err(ProtoError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn refuses_garbage_and_trailing_payloads() {
        assert!(decode_payload::<MetaRequest>(&[0xff, 0xff, 0xff]).is_err());
        let good = encode_frame(
            FrameKind::Request,
            &MetaRequest::Query(crate::MetaQuery::ListBuckets),
        )
        .unwrap();
        let mut payload = good[8..].to_vec();
        payload.push(0);
        assert!(decode_payload::<MetaRequest>(&payload).is_err());
    }

    /// A batch round-trips; batches nested in batches do not decode, however
    /// deep (a million levels would overflow the stack if they recursed),
    /// and the refusal leaves the next decode on the thread unaffected.
    #[test]
    fn batches_decode_flat_only() {
        use crate::MetaResponse;
        let flat = MetaRequest::Batch(vec![MetaRequest::Query(crate::MetaQuery::ListBuckets); 3]);
        let frame = encode_frame(FrameKind::Request, &flat).unwrap();
        assert_eq!(decode_payload::<MetaRequest>(&frame[8..]).unwrap(), flat);
        let nested = MetaRequest::Batch(vec![flat.clone()]);
        let frame = encode_frame(FrameKind::Request, &nested).unwrap();
        assert!(decode_payload::<MetaRequest>(&frame[8..]).is_err());
        // Each level is the variant's tag and a list of one.
        let tag = |frame: Vec<u8>| frame[8];
        let request_tag =
            tag(encode_frame(FrameKind::Request, &MetaRequest::Batch(vec![])).unwrap());
        let response_tag =
            tag(encode_frame(FrameKind::Response, &MetaResponse::Batch(vec![])).unwrap());
        for (variant, name) in [(request_tag, "request"), (response_tag, "response")] {
            let deep: Vec<u8> = std::iter::repeat_n([variant, 1], 1_000_000)
                .flatten()
                .collect();
            let r = if name == "request" {
                decode_payload::<MetaRequest>(&deep).map(|_| ())
            } else {
                decode_payload::<MetaResponse>(&deep).map(|_| ())
            };
            assert!(r.is_err(), "{name}");
        }
        let answers = MetaResponse::Batch(vec![MetaResponse::Ok, MetaResponse::Ok]);
        let frame = encode_frame(FrameKind::Response, &answers).unwrap();
        assert_eq!(
            decode_payload::<MetaResponse>(&frame[8..]).unwrap(),
            answers
        );
        assert_eq!(
            decode_payload::<MetaRequest>(&flat_frame(&flat)).unwrap(),
            flat
        );
    }

    fn flat_frame(req: &MetaRequest) -> Vec<u8> {
        encode_frame(FrameKind::Request, req).unwrap()[8..].to_vec()
    }
}
