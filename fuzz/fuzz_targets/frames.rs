//! Frames from the network: the header, then a payload as each message type
//! a peer may send (requests to meta and nodes, their responses). Nothing
//! may panic; a decoded message must encode back to a frame that decodes
//! to the same message (compared as its encoding: floats in status
//! documents may be NaN, which is not equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_proto::{
    FRAME_HEADER_LEN, FrameHeader, FrameKind, MetaRequest, MetaResponse, NodeRequest,
    NodeResponse, decode_payload, encode_frame,
};

fn round_trip<T>(payload: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    if let Ok(msg) = decode_payload::<T>(payload) {
        let frame = encode_frame(FrameKind::Request, &msg).expect("a decoded message encodes");
        let again: T = decode_payload(&frame[FRAME_HEADER_LEN..]).expect("and decodes again");
        let frame_again = encode_frame(FrameKind::Request, &again).expect("and encodes again");
        assert_eq!(frame_again, frame);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..FRAME_HEADER_LEN) {
        let header: [u8; FRAME_HEADER_LEN] = header.try_into().expect("8 bytes");
        let _ = FrameHeader::parse(&header);
    }
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => round_trip::<MetaRequest>(payload),
        1 => round_trip::<MetaResponse>(payload),
        2 => round_trip::<NodeRequest>(payload),
        _ => round_trip::<NodeResponse>(payload),
    }
});
