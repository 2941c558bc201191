//! The kernel UDP port: one datagram per frame on a `std` UDP socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::Port;

/// A kernel UDP socket as a [`Port`].
#[derive(Debug)]
pub struct UdpPort {
    sock: UdpSocket,
}

impl UdpPort {
    /// Binds `addr` (port 0 picks a free one). A port in use is an
    /// `AddrInUse` error naming the address.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpPort> {
        let sock = UdpSocket::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
        Self::configure(sock)
    }

    /// `n` sockets on one address (`SO_REUSEPORT`), among which the kernel
    /// spreads flows by their addresses' hash, so each of `n` reactors can
    /// poll its own and a client's datagrams always reach the same one. The
    /// address must be free: it is bound once alone first, so a port
    /// another server holds is an `AddrInUse` error, not a share of its
    /// traffic.
    pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpPort>> {
        let at = UdpSocket::bind(addr)
            .and_then(|probe| probe.local_addr())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
        (0..n.max(1))
            .map(|_| {
                let family = if at.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                // SAFETY: socket(2) with constant arguments; the result is
                // checked before use.
                let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` is a new socket this function owns; the
                // UdpSocket closes it when dropped (also on the errors
                // below).
                let sock = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                if set_buffer(&sock, libc::SO_REUSEPORT, 1) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let (raw, len) = raw_addr(at);
                // SAFETY: a valid socket and an address of `len` bytes.
                let r =
                    unsafe { libc::bind(fd, (&raw as *const libc::sockaddr_storage).cast(), len) };
                if r != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot bind UDP {at}: {e}"),
                    ));
                }
                Self::configure(sock)
            })
            .collect()
    }

    fn configure(sock: UdpSocket) -> io::Result<UdpPort> {
        // Room for a window of multi-packet messages in flight (a session
        // may have several MiB of answers on the way). Root may exceed the
        // system's cap (net.core.rmem_max); others get up to it.
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if set_buffer(&sock, force, 32 << 20) != 0 {
                set_buffer(&sock, plain, 32 << 20);
            }
        }
        // Never block in the socket: waiting is ppoll's, whose timeout is
        // exact (a socket's receive timeout rounds up to a scheduler tick,
        // which would add milliseconds to every "anything else queued?").
        sock.set_nonblocking(true)?;
        Ok(UdpPort { sock })
    }
}

fn set_buffer(sock: &UdpSocket, opt: libc::c_int, bytes: libc::c_int) -> libc::c_int {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a c_int option value of the
    // size passed; the kernel copies it and keeps no pointer.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    }
}

/// A socket address in the kernel's form, and its length.
fn raw_addr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is valid,
    // and it is large and aligned enough for either address family.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage holds a sockaddr_in.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage holds a sockaddr_in6.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

impl Port for UdpPort {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        self.sock.send_to(frame, to).map(|_| ())
    }

    /// One datagram gathered from both parts by `sendmsg` (the kernel
    /// copies each once, into its socket buffer).
    fn send_parts(
        &self,
        head: &[u8],
        body: &std::sync::Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        to: SocketAddr,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let tail = &body[range];
        let (mut addr, alen) = raw_addr(to);
        let mut iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: tail.as_ptr() as *mut libc::c_void,
                iov_len: tail.len(),
            },
        ];
        // SAFETY: msghdr is plain data; all zeroes is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = alen;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        loop {
            // SAFETY: the message names a valid address and two iovecs over
            // live, readable slices; the kernel copies them before
            // returning and keeps no pointer.
            let r = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        use std::os::fd::AsRawFd;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            match self.sock.recv_from(buf) {
                Ok((n, from)) => return Ok(Some((n, from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
                None => None,
            };
            let ts = left.map(|l| libc::timespec {
                tv_sec: l.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(l.subsec_nanos() as i32),
            });
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the timespec (if any) outlives the
            // call; the signal mask is left alone (NULL).
            let r = unsafe {
                libc::ppoll(
                    &mut pfd,
                    1,
                    ts.as_ref()
                        .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                    std::ptr::null(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn readable_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.sock.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_loopback_and_a_taken_port_is_named() {
        let a = UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        a.send(b"frame", b.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = b
            .recv(&mut buf, Some(Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"frame"[..], a.local_addr().unwrap()));
        assert!(b
            .recv(&mut buf, Some(Duration::from_millis(5)))
            .unwrap()
            .is_none());
        // Two parts make one datagram.
        let body = std::sync::Arc::new(b"xxbodyxx".to_vec());
        a.send_parts(b"head-", &body, 2..6, b.local_addr().unwrap())
            .unwrap();
        let (n, _) = b
            .recv(&mut buf, Some(Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"head-body");
        let err = UdpPort::bind(a.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }

    #[test]
    fn a_socket_group_shares_one_port_and_each_flow_reaches_one_socket() {
        let group = UdpPort::bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let at = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), at);
        // The port is taken: neither a plain socket nor another group gets it.
        assert_eq!(
            UdpPort::bind(at).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        assert_eq!(
            UdpPort::bind_group(at, 2).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // Many clients, three datagrams each: every one arrives once, and
        // all of a client's at the same socket.
        let clients: Vec<UdpPort> = (0..16)
            .map(|_| UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        for c in &clients {
            for _ in 0..3 {
                c.send(b"x", at).unwrap();
            }
        }
        let mut seen: std::collections::HashMap<SocketAddr, Vec<usize>> = Default::default();
        let mut buf = [0u8; 16];
        for (i, s) in group.iter().enumerate() {
            while let Some((_, from)) = s.recv(&mut buf, Some(Duration::from_millis(50))).unwrap() {
                seen.entry(from).or_default().push(i);
            }
        }
        assert_eq!(seen.len(), 16);
        for (from, sockets) in &seen {
            assert_eq!(sockets.len(), 3, "{from}");
            assert!(
                sockets.iter().all(|&s| s == sockets[0]),
                "{from}: {sockets:?}"
            );
        }
    }
}
