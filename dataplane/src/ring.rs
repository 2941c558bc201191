//! Bounded single-producer single-consumer ring: the cross-core message lane.
//!
//! Each pair of reactors talks over one of these per direction, so neither
//! side ever takes a lock or a read-modify-write atomic: the producer owns
//! `tail`, the consumer owns `head`, and each keeps a cached copy of the
//! other's index so it touches the shared cache line only when its cached view
//! says the ring is full (producer) or empty (consumer). Batched operations
//! publish their index once per batch, which is what makes a ring carry tens
//! of millions of messages a second between two cores.
//!
//! A full ring is back-pressure: [`Producer::push`] hands the value back.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Pads a value to its own pair of cache lines so the producer's and the
/// consumer's indices never share one (adjacent-line prefetch included).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the consumer reads; written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes; written only by the producer.
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: slots are handed from the single producer to the single consumer
// through the Release store of `tail` and back through the Release store of
// `head`; no slot is accessed by both sides at once. T must be Send to cross.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the ring owns its Ts, which are Send.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for pos in head..tail {
            // SAFETY: slots in head..tail were written by the producer and not
            // yet read by the consumer; we have exclusive access in drop.
            unsafe { (*self.slots[pos & self.mask].get()).assume_init_drop() };
        }
    }
}

/// The sending end of a ring.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    head_cache: usize,
}

/// The receiving end of a ring.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    tail_cache: usize,
}

/// Creates a ring holding up to `capacity` messages (rounded up to a power of two).
pub fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        slots,
        mask: cap - 1,
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            head_cache: 0,
        },
        Consumer {
            shared,
            head: 0,
            tail_cache: 0,
        },
    )
}

impl<T: Send> Producer<T> {
    /// Capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots, refreshing the cached consumer index only when needed.
    fn free(&mut self, want: usize) -> usize {
        let cap = self.capacity();
        let mut free = cap - (self.tail - self.head_cache);
        if free < want {
            self.head_cache = self.shared.head.0.load(Ordering::Acquire);
            free = cap - (self.tail - self.head_cache);
        }
        free
    }

    /// Writes `value` into the next slot without publishing it.
    ///
    /// # Safety
    /// The caller must have checked that a slot is free.
    unsafe fn write(&mut self, value: T) {
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: the slot is free (caller checked), so the consumer does not
        // read it until we publish `tail` past it.
        unsafe { (*slot.get()).write(value) };
        self.tail += 1;
    }

    /// Sends one message. A full ring hands it back (back-pressure).
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free(1) == 0 {
            return Err(value);
        }
        // SAFETY: free() reported a free slot.
        unsafe { self.write(value) };
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Moves as many messages from the front of `src` as fit, publishing them
    /// with one index store. Returns how many moved; the rest stay in `src`.
    pub fn push_batch(&mut self, src: &mut Vec<T>) -> usize {
        let n = self.free(src.len()).min(src.len());
        if n == 0 {
            return 0;
        }
        for value in src.drain(..n) {
            // SAFETY: n slots are free and we write exactly n.
            unsafe { self.write(value) };
        }
        self.shared.tail.0.store(self.tail, Ordering::Release);
        n
    }

    /// Whether the consumer has gone away.
    pub fn is_disconnected(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T: Send> Consumer<T> {
    /// Messages available, refreshing the cached producer index when needed.
    fn available(&mut self, want: usize) -> usize {
        if self.tail_cache - self.head < want {
            self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
        }
        self.tail_cache - self.head
    }

    /// Takes one message.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available(1) == 0 {
            return None;
        }
        let value = self.read();
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    fn read(&mut self) -> T {
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: head < tail_cache, and the Acquire load of tail makes the
        // producer's write of this slot visible; the producer does not reuse
        // it until we publish head past it.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head += 1;
        value
    }

    /// Takes up to `max` messages, handing each to `f`, and frees their slots
    /// with one index store. Returns how many were taken.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.available(max).min(max);
        for _ in 0..n {
            let value = self.read();
            f(value);
        }
        if n > 0 {
            self.shared.head.0.store(self.head, Ordering::Release);
        }
        n
    }

    /// Whether a message is waiting (reads the producer's index).
    pub fn is_empty(&self) -> bool {
        self.head == self.shared.tail.0.load(Ordering::Acquire)
    }

    /// Whether the producer has gone away.
    pub fn is_disconnected(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_backpressure() {
        let (mut p, mut c) = ring::<u32>(4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9), "a full ring hands the value back");
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let mut got = vec![];
        c.pop_batch(16, |v| got.push(v));
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn batch_push_keeps_the_rest() {
        let (mut p, mut c) = ring::<u32>(8);
        let mut src: Vec<u32> = (0..12).collect();
        assert_eq!(p.push_batch(&mut src), 8);
        assert_eq!(src, vec![8, 9, 10, 11]);
        assert_eq!(c.pop_batch(3, drop), 3);
        assert_eq!(p.push_batch(&mut src), 3);
        assert_eq!(src, vec![11]);
    }

    #[test]
    fn drops_undelivered_messages() {
        let token = Arc::new(());
        let (mut p, c) = ring::<Arc<()>>(4);
        p.push(token.clone()).unwrap();
        p.push(token.clone()).unwrap();
        drop(p);
        drop(c);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn two_threads_deliver_everything_in_order() {
        let (mut p, mut c) = ring::<u64>(64);
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(i).is_ok() {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < N {
            if c.pop_batch(32, |v| {
                assert_eq!(v, next);
                next += 1;
            }) == 0
            {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
    }
}
