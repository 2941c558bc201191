//! Bounded multi-producer queue: a reactor's inbox for work from any thread.
//!
//! Dmitry Vyukov's bounded array queue: every cell carries a sequence number
//! that tells producers and the consumer whose turn the cell is, so producers
//! claim cells with one compare-and-swap on `tail` and never wait on each
//! other. It carries control-path work (closures from other threads); the
//! data path between reactors uses the single-producer [`crate::ring`].
//! A full queue is back-pressure: [`Queue::push`] hands the value back.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ring::CachePadded;

struct Cell<T> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded lock-free queue for many producers and many consumers.
pub struct Queue<T> {
    cells: Box<[Cell<T>]>,
    mask: usize,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: a cell's value is written by exactly one producer (the one whose
// CAS claimed it) and read by exactly one consumer (likewise); the sequence
// number's Release/Acquire pair orders those accesses.
unsafe impl<T: Send> Sync for Queue<T> {}
// SAFETY: the queue owns its Ts, which are Send.
unsafe impl<T: Send> Send for Queue<T> {}

impl<T> Queue<T> {
    /// Creates a queue for up to `capacity` items (rounded up to a power of two).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        let cells = (0..cap)
            .map(|i| Cell {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Queue {
            cells,
            mask: cap - 1,
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Adds an item; a full queue hands it back.
    pub fn push(&self, value: T) -> Result<(), T> {
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.tail.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: our CAS claimed this cell for writing; no
                        // consumer reads it until seq becomes pos + 1.
                        unsafe { (*cell.value.get()).write(value) };
                        cell.seq.store(pos + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return Err(value);
            } else {
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest item, if any.
    pub fn pop(&self) -> Option<T> {
        let mut pos = self.head.0.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as isize - (pos + 1) as isize;
            if diff == 0 {
                match self.head.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: our CAS claimed this published cell for
                        // reading; producers reuse it only after seq moves on.
                        let value = unsafe { (*cell.value.get()).assume_init_read() };
                        cell.seq.store(pos + self.mask + 1, Ordering::Release);
                        return Some(value);
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Whether the queue looks empty right now.
    pub fn is_empty(&self) -> bool {
        self.head.0.load(Ordering::Acquire) == self.tail.0.load(Ordering::Acquire)
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for pos in head..tail {
            // SAFETY: cells in head..tail hold published, unread values; drop
            // has exclusive access.
            unsafe { (*self.cells[pos & self.mask].value.get()).assume_init_drop() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounded_fifo() {
        let q = Queue::new(2);
        q.push(1).unwrap();
        q.push(2).unwrap();
        assert_eq!(q.push(3), Err(3));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn many_producers_lose_nothing() {
        let q = Arc::new(Queue::<u64>::new(128));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        let mut v = p * 1_000_000 + i;
                        while let Err(back) = q.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut seen = [0u64; 4];
        let mut n = 0;
        while n < 200_000 {
            match q.pop() {
                Some(v) => {
                    let (p, i) = ((v / 1_000_000) as usize, v % 1_000_000);
                    assert_eq!(i, seen[p], "per-producer order is kept");
                    seen[p] += 1;
                    n += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for t in producers {
            t.join().unwrap();
        }
    }
}
