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

impl Port for UdpPort {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        self.sock.send_to(frame, to).map(|_| ())
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
        let err = UdpPort::bind(a.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
}
