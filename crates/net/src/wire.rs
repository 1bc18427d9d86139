use quinn::{Connection, ReadExactError, RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_proto::{FRAME_HEADER_LEN, FrameHeader, FrameKind, decode_payload, encode_frame};

use crate::NetError;

fn read_err(e: ReadExactError, what: &str) -> NetError {
    match e {
        ReadExactError::FinishedEarly(n) => {
            NetError::Truncated(format!("{what}: stream ended after {n} bytes"))
        }
        ReadExactError::ReadError(e) => NetError::ConnectionLost(format!("{what}: {e}")),
    }
}

pub async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    kind: FrameKind,
    msg: &T,
) -> Result<(), NetError> {
    let frame = encode_frame(kind, msg)?;
    send.write_all(&frame)
        .await
        .map_err(|e| NetError::ConnectionLost(e.to_string()))
}

/// Reads one whole frame of the expected kind; the length is checked against
/// the protocol limit before anything is allocated.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    expected: FrameKind,
) -> Result<T, NetError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| read_err(e, "frame header"))?;
    let header = FrameHeader::parse(&header)?;
    if header.kind != expected {
        return Err(NetError::UnexpectedFrame {
            expected,
            got: header.kind,
        });
    }
    let mut payload = vec![0u8; header.len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| read_err(e, "frame payload"))?;
    Ok(decode_payload(&payload)?)
}

/// Reads a body of `len` bytes whose length a frame announced into a new
/// buffer, not zeroed first since every byte is overwritten (zeroing cost
/// a pass over every fragment read). The caller bounds `len`. Errors:
/// `Truncated` when the stream ends early, `ConnectionLost`.
pub async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, NetError> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(NetError::Truncated(format!(
                    "body: stream ended after {} bytes",
                    buf.len()
                )));
            }
            Err(e) => return Err(NetError::ConnectionLost(format!("body: {e}"))),
        }
    }
    Ok(buf)
}

/// One request, one response, on a fresh stream of `conn`.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    conn: &Connection,
    req: &Req,
) -> Result<Resp, NetError> {
    call_encoded(conn, &encode_frame(FrameKind::Request, req)?).await
}

/// `call` with the request frame already encoded (`encode_frame` with
/// `FrameKind::Request`): a caller that must know the frame fits before
/// anything is sent encodes it first.
pub async fn call_encoded<Resp: DeserializeOwned>(
    conn: &Connection,
    frame: &[u8],
) -> Result<Resp, NetError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| NetError::ConnectionLost(e.to_string()))?;
    send.write_all(frame)
        .await
        .map_err(|e| NetError::ConnectionLost(e.to_string()))?;
    // The peer may already have answered and reset; the answer still counts.
    let _ = send.finish();
    read_frame(&mut recv, FrameKind::Response).await
}
