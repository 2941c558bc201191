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

use std::io;
use std::net::SocketAddr;
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
}
