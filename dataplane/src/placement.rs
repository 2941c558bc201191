//! CPU placement: which cores reactors may run on, and pinning a thread.

use crate::error::{Error, Result};
use std::io;

/// The cores this process is allowed to run on (its affinity mask).
pub fn allowed_cores() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size we pass.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(Error::Os {
            op: "sched_getaffinity",
            source: io::Error::last_os_error(),
        });
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is initialised and `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(Error::Placement {
            core,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size we pass.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(Error::Placement {
            core,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_to_an_allowed_core_and_refuses_a_missing_one() {
        let cores = allowed_cores().unwrap();
        assert!(!cores.is_empty());
        let first = cores[0];
        std::thread::spawn(move || pin_current_thread(first).unwrap())
            .join()
            .unwrap();
        let err = std::thread::spawn(|| pin_current_thread(100_000))
            .join()
            .unwrap();
        assert!(matches!(err, Err(Error::Placement { core: 100_000, .. })));
    }
}
