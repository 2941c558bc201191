//! Typed data-path channels between every pair of reactors.
//!
//! A mesh of `n` endpoints has one single-producer ring per ordered pair of
//! reactors, so a send is a store into a ring nobody else writes, and a
//! receive drains every inbound ring in turn. Senders wake the receiving
//! reactor once per batch ([`Endpoint::flush`]) so an adaptive reactor that
//! parked still sees its messages. A full ring hands messages back: the
//! caller holds them and retries (back-pressure), nothing grows unbounded.

use crate::park::Waker;
use crate::ring::{ring, Consumer, Producer};

/// One reactor's end of a mesh: rings to every reactor and from every reactor.
pub struct Endpoint<T> {
    index: usize,
    to: Vec<Producer<T>>,
    from: Vec<Consumer<T>>,
    wakers: Vec<Waker>,
    dirty: Vec<bool>,
}

/// Builds a mesh for reactors woken by `wakers` (index order), each ring
/// holding `capacity` messages. Endpoint `i` belongs on reactor `i`.
pub fn mesh<T: Send>(wakers: Vec<Waker>, capacity: usize) -> Vec<Endpoint<T>> {
    let n = wakers.len();
    let mut to: Vec<Vec<Option<Producer<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<Option<Consumer<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for (src, row) in to.iter_mut().enumerate() {
        for (dst, slot) in row.iter_mut().enumerate() {
            let (p, c) = ring(capacity);
            *slot = Some(p);
            from[dst][src] = Some(c);
        }
    }
    to.into_iter()
        .zip(from)
        .enumerate()
        .map(|(index, (to, from))| Endpoint {
            index,
            to: to.into_iter().flatten().collect(),
            from: from.into_iter().flatten().collect(),
            wakers: wakers.clone(),
            dirty: vec![false; n],
        })
        .collect()
}

impl<T: Send> Endpoint<T> {
    /// The reactor this endpoint belongs to.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of reactors in the mesh.
    pub fn len(&self) -> usize {
        self.to.len()
    }

    /// Always false: a mesh has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        self.to.is_empty()
    }

    /// Queues one message for reactor `dst`; a full ring hands it back.
    /// Call [`Endpoint::flush`] after a batch of sends to wake receivers.
    #[inline]
    pub fn send(&mut self, dst: usize, msg: T) -> Result<(), T> {
        self.to[dst].push(msg)?;
        self.dirty[dst] = true;
        Ok(())
    }

    /// Moves as many messages from `src` to reactor `dst` as fit; returns how
    /// many moved.
    pub fn send_batch(&mut self, dst: usize, src: &mut Vec<T>) -> usize {
        let n = self.to[dst].push_batch(src);
        if n > 0 {
            self.dirty[dst] = true;
        }
        n
    }

    /// Wakes every reactor that was sent something since the last flush.
    pub fn flush(&mut self) {
        for (dst, dirty) in self.dirty.iter_mut().enumerate() {
            if *dirty {
                *dirty = false;
                if dst != self.index {
                    self.wakers[dst].wake();
                }
            }
        }
    }

    /// Receives up to `max` messages from all reactors, calling
    /// `f(source, message)` for each. Returns how many arrived.
    #[inline]
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(usize, T)) -> usize {
        let mut n = 0;
        for (src, c) in self.from.iter_mut().enumerate() {
            if n >= max {
                break;
            }
            n += c.pop_batch(max - n, |m| f(src, m));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::park::Parker;

    #[test]
    fn every_pair_has_its_own_ring() {
        let parkers: Vec<_> = (0..3).map(|_| Parker::new().unwrap()).collect();
        let mut eps = mesh::<(usize, u32)>(parkers.iter().map(|p| p.waker()).collect(), 4);
        for (src, ep) in eps.iter_mut().enumerate() {
            for dst in 0..3 {
                ep.send(dst, (src, dst as u32)).unwrap();
            }
            ep.flush();
        }
        for (dst, ep) in eps.iter_mut().enumerate() {
            let mut got = vec![];
            ep.recv(16, |from, m| got.push((from, m)));
            assert_eq!(
                got,
                (0..3).map(|s| (s, (s, dst as u32))).collect::<Vec<_>>()
            );
        }
    }
}
