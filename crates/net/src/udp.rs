//! The UDP socket under quinn: quinn's own, with every GSO batch kept
//! within what the kernel sends in one call.
//!
//! quinn hands the socket up to 10 packets of one size in one transmit
//! (generic segmentation offload). Linux refuses a send whose UDP payload,
//! all segments together, exceeds 65,535 bytes less the headers, with
//! EMSGSIZE, and quinn-udp (0.5) drops a transmit that fails with EMSGSIZE
//! without a word (it expects the error only for MTU probes). Once a path's
//! packets pass 6,550 bytes (loopback, jumbo frames), every full batch
//! vanished: quinn saw bursts of loss, took them for an MTU black hole and
//! went back to 1,200-byte packets. This socket sends such a batch as
//! several sends of whole packets instead.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The most UDP payload one send may carry, in bytes: an IPv4 datagram's
/// 65,535 less its 20-byte header and UDP's 8 (IPv6 allows 20 more; the
/// smaller limit serves both).
pub(crate) const MAX_SEND_PAYLOAD: usize = 65_507;

/// quinn's socket for the current runtime, with transmits split to fit
/// `MAX_SEND_PAYLOAD`.
pub(crate) struct BoundedGsoSocket {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl BoundedGsoSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        BoundedGsoSocket { inner }
    }
}

impl fmt::Debug for BoundedGsoSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedGsoSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The byte ranges of `len` bytes of `segment_size`-byte packets to send one
/// call each: all of them when they fit in `limit` bytes, else as many whole
/// packets as fit (at least one) per call, the last range holding the
/// remainder. A `segment_size` of 0 is taken as one packet.
pub(crate) fn send_ranges(
    len: usize,
    segment_size: usize,
    limit: usize,
) -> impl Iterator<Item = Range<usize>> {
    let step = if segment_size == 0 || len <= limit {
        len.max(1)
    } else {
        (limit / segment_size).max(1) * segment_size
    };
    (0..len)
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

impl AsyncUdpSocket for BoundedGsoSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    /// Sends a transmit in as few sends as the kernel allows. When a send
    /// after the first would block, the whole transmit is reported as
    /// blocked and quinn sends it again: the packets already sent arrive
    /// twice, and the receiver drops the copies by packet number. That is
    /// rare (8 MiB socket buffers) and cheaper than reporting them lost,
    /// which would shrink the congestion window.
    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment_size = match transmit.segment_size {
            Some(size) if transmit.contents.len() > MAX_SEND_PAYLOAD => size,
            _ => return self.inner.try_send(transmit),
        };
        for range in send_ranges(transmit.contents.len(), segment_size, MAX_SEND_PAYLOAD) {
            self.inner.try_send(&Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents: &transmit.contents[range],
                segment_size: Some(segment_size),
                src_ip: transmit.src_ip,
            })?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(len: usize, segment: usize) -> Vec<Range<usize>> {
        send_ranges(len, segment, MAX_SEND_PAYLOAD).collect()
    }

    #[test]
    fn batches_that_fit_go_whole() {
        assert_eq!(ranges(10 * 1452, 1452), vec![0..14_520]);
        assert_eq!(ranges(7 * 8952 + 100, 8952), vec![0..62_764]);
        assert_eq!(ranges(MAX_SEND_PAYLOAD, 1), vec![0..MAX_SEND_PAYLOAD]);
    }

    #[test]
    fn large_batches_split_at_packet_boundaries() {
        // Ten jumbo packets: seven fit in one send (62,664 bytes), three follow.
        assert_eq!(ranges(10 * 8952, 8952), vec![0..62_664, 62_664..89_520]);
        // A short last packet stays in the last send.
        assert_eq!(
            ranges(3 * 30_000 + 5, 30_000),
            vec![0..60_000, 60_000..90_005]
        );
        // Packets of the largest size go one per send.
        let r = ranges(3 * MAX_SEND_PAYLOAD, MAX_SEND_PAYLOAD);
        assert_eq!(r.len(), 3);
        for (i, range) in r.iter().enumerate() {
            assert_eq!(range.start, i * MAX_SEND_PAYLOAD);
            assert_eq!(range.len(), MAX_SEND_PAYLOAD);
        }
        // Every send but the last is whole packets, and none is too large.
        for segment in [1200, 1452, 6553, 6554, 8952, 16_384, 65_000] {
            let len = 10 * segment - 7;
            let r = ranges(len, segment);
            assert_eq!(r.first().map(|r| r.start), Some(0));
            assert_eq!(r.last().map(|r| r.end), Some(len));
            for pair in r.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert_eq!(pair[0].len() % segment, 0);
            }
            assert!(r.iter().all(|r| r.len() <= MAX_SEND_PAYLOAD));
        }
    }

    #[test]
    fn nothing_to_send_is_no_send() {
        assert!(ranges(0, 1452).is_empty());
        assert_eq!(ranges(5, 0), vec![0..5]);
    }
}
