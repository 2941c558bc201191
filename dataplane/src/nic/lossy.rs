//! A port that drops every Nth frame it sends, to test that the protocol
//! above recovers every request by retransmission.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Port;

/// Wraps a port; every `nth` sent frame is silently dropped.
pub struct LossyPort<P> {
    inner: P,
    nth: u64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl<P: Port> LossyPort<P> {
    /// Drops every `nth` frame (`nth` of 0 or 1 is treated as 2: a port
    /// that drops everything tests nothing).
    pub fn new(inner: P, nth: u64) -> Self {
        LossyPort {
            inner,
            nth: nth.max(2),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the frame being sent now is one to drop (and counts it).
    fn lose(&self) -> bool {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let lose = n.is_multiple_of(self.nth);
        if lose {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        lose
    }
}

impl<P: Port> Port for LossyPort<P> {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        if self.lose() {
            return Ok(());
        }
        self.inner.send(frame, to)
    }

    fn send_parts(
        &self,
        head: &[u8],
        body: &Arc<Vec<u8>>,
        range: Range<usize>,
        to: SocketAddr,
    ) -> io::Result<()> {
        if self.lose() {
            return Ok(());
        }
        self.inner.send_parts(head, body, range, to)
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.inner.recv(buf, timeout)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
