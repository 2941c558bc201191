//! Little-endian encoding of on-device structures, with typed errors on
//! truncated or malformed input (every parser of untrusted bytes goes
//! through [`Reader`], which never panics).

use std::fmt;

/// Input ended early or held an impossible value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What was being read.
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed on-device data: bad {}", self.what)
    }
}

impl std::error::Error for DecodeError {}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer {
    /// The bytes written.
    pub buf: Vec<u8>,
}

impl Writer {
    /// A u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u128.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads encoded values, failing cleanly on short or bad input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A u8.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// A u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// A u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    /// A u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A u128.
    pub fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16, what)?);
        Ok(u128::from_le_bytes(a))
    }
    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError { what });
        }
        self.take(n, what)
    }
    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError { what })
    }
    /// A count of items that must each take at least `min_item` bytes
    /// (so a corrupt count cannot make the caller allocate wildly).
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(DecodeError { what });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::default();
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .u128(5)
            .str("fs0")
            .bytes(&[9, 9]);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.u64("d").unwrap(), 4);
        assert_eq!(r.u128("e").unwrap(), 5);
        assert_eq!(r.str(16, "f").unwrap(), "fs0");
        assert_eq!(r.bytes(16, "g").unwrap(), &[9, 9]);
        assert_eq!(r.remaining(), 0);
        for cut in 0..w.buf.len() {
            let mut r = Reader::new(&w.buf[..cut]);
            let all = (|| -> Result<(), DecodeError> {
                r.u8("a")?;
                r.u16("b")?;
                r.u32("c")?;
                r.u64("d")?;
                r.u128("e")?;
                r.str(16, "f")?;
                r.bytes(16, "g")?;
                Ok(())
            })();
            assert!(all.is_err(), "cut at {cut} must fail");
        }
        let mut r = Reader::new(&[255, 255, 255, 255]);
        assert!(r.count(1, "n").is_err(), "a huge count is refused");
    }
}
