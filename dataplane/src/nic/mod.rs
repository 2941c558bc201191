//! NIC ports: where the data protocol's frames enter and leave a node.
//!
//! A [`Port`] moves whole frames (one datagram each) to and from peers
//! named by their socket address. The kernel UDP port ([`udp`]) is the
//! fallback transport and the one every machine has; the DPDK port carries
//! the same frames over NIC rings (feature `dpdk`: [`dpdk`]). [`lossy`] wraps any port and drops every
//! Nth frame, to test retransmission.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod lossy;
pub mod udp;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Largest frame any port carries (a UDP datagram's limit).
pub const MAX_FRAME: usize = 65_507;

/// A bidirectional frame port.
pub trait Port: Send + Sync {
    /// Sends one frame to `to`. A full transmit queue or an unreachable
    /// peer is an error; the protocol above retransmits.
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Receives one frame into `buf`, waiting up to `timeout` (`None`: until
    /// one arrives). Returns its length and sender, or `None` on timeout.
    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>>;

    /// The local address frames are received on.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// A descriptor that becomes readable when a frame arrives (a socket),
    /// so whoever polls the port may sleep until then; `None` for a port
    /// that must be polled (a NIC queue).
    fn readable_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Sends one frame made of `head` followed by `body[range]`. A port
    /// that can transmit from `body` where it lies (DPDK with external
    /// buffers; the kernel with a gathered `sendmsg`) does so without
    /// copying it, holding a reference until the NIC is done with it; the
    /// default joins the parts and sends the result.
    fn send_parts(
        &self,
        head: &[u8],
        body: &Arc<Vec<u8>>,
        range: Range<usize>,
        to: SocketAddr,
    ) -> io::Result<()> {
        JOINED.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            b.extend_from_slice(head);
            b.extend_from_slice(&body[range]);
            self.send(&b, to)
        })
    }

    /// Hands the frames that have already arrived, up to `max`, to `f`
    /// without waiting; returns how many. A port that can lends each frame
    /// where the NIC put it (no copy out of its buffers); the default
    /// receives each into a buffer first.
    fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[u8], SocketAddr)) -> io::Result<usize> {
        RECEIVED.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < MAX_FRAME {
                b.resize(MAX_FRAME, 0);
            }
            let mut n = 0;
            while n < max {
                let Some((len, from)) = self.recv(&mut b, Some(Duration::ZERO))? else {
                    break;
                };
                f(&b[..len], from);
                n += 1;
            }
            Ok(n)
        })
    }
}

thread_local! {
    // The default `send_parts` joins parts here (one buffer per thread).
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    // The default `recv_burst` receives here.
    static RECEIVED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
