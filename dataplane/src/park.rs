//! Parking an idle reactor and waking it: one eventfd per reactor.
//!
//! In adaptive mode a reactor that has found no work for a while announces
//! that it is about to sleep ([`Parker::prepare`]), polls everything once
//! more, and only then blocks on its eventfd ([`Parker::park`]). Anything that
//! gives it work — a message pushed on one of its rings, a task in its inbox,
//! an io_uring completion (the eventfd is registered with its rings) — calls
//! [`Waker::wake`] after publishing, which writes the eventfd only if the
//! reactor announced sleep. The SeqCst fences on both sides make the classic
//! store-then-load handshake: either the reactor's last poll sees the work or
//! the waker sees the sleeping flag.

use crate::error::{Error, Result};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Inner {
    fd: OwnedFd,
    sleeping: AtomicBool,
    wakeups: AtomicU64,
}

/// The reactor's side: announces sleep and blocks.
pub struct Parker {
    inner: Arc<Inner>,
}

/// Anyone's side: wakes the reactor if it sleeps. Cheap to clone.
#[derive(Clone)]
pub struct Waker {
    inner: Arc<Inner>,
}

impl Parker {
    /// Creates a parker and its eventfd.
    pub fn new() -> Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::Os {
                op: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Parker {
            inner: Arc::new(Inner {
                // SAFETY: `fd` is a fresh descriptor that nothing else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                sleeping: AtomicBool::new(false),
                wakeups: AtomicU64::new(0),
            }),
        })
    }

    /// A waker for this parker.
    pub fn waker(&self) -> Waker {
        Waker {
            inner: self.inner.clone(),
        }
    }

    /// The eventfd, for registering with io_uring so completions wake us.
    pub fn fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    /// Announces that the reactor is about to sleep. The caller must poll its
    /// sources once more after this and call [`Parker::cancel`] if it found
    /// work, or [`Parker::park`] if it did not.
    pub fn prepare(&self) {
        self.inner.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Withdraws the announcement made by [`Parker::prepare`].
    pub fn cancel(&self) {
        self.inner.sleeping.store(false, Ordering::Relaxed);
    }

    /// Blocks until woken or until `timeout` passes (`None`: no timeout).
    pub fn park(&self, timeout: Option<Duration>) {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        self.inner.sleeping.store(false, Ordering::Relaxed);
        self.drain();
    }

    /// Clears pending wake-ups (also those io_uring posted while we were busy).
    pub fn drain(&self) {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into `buf`; the fd is non-blocking.
        unsafe { libc::read(self.fd(), (&mut buf as *mut u64).cast(), 8) };
    }

    /// Wake-ups delivered so far.
    pub fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::Relaxed)
    }
}

impl Waker {
    /// Wakes the reactor if it announced sleep. Call after publishing work.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.inner.sleeping.load(Ordering::Relaxed) {
            self.force();
        }
    }

    /// Writes the eventfd unconditionally.
    pub fn force(&self) {
        self.inner.sleeping.store(false, Ordering::Relaxed);
        self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to our eventfd. A full counter
        // (EAGAIN) already means "wake up", so the result can be ignored.
        unsafe { libc::write(self.inner.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn wake_ends_park_and_timeout_ends_it_too() {
        let p = Parker::new().unwrap();
        let w = p.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        p.prepare();
        let t0 = Instant::now();
        p.park(Some(Duration::from_secs(10)));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        t.join().unwrap();

        let t0 = Instant::now();
        p.prepare();
        p.park(Some(Duration::from_millis(10)));
        assert!(t0.elapsed() >= Duration::from_millis(9));
    }

    #[test]
    fn wake_without_sleep_writes_nothing() {
        let p = Parker::new().unwrap();
        p.waker().wake();
        assert_eq!(p.wakeups(), 0);
    }
}
