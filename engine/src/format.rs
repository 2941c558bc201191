//! The on-device format: a superblock per device, a mirrored metadata
//! journal, two checkpoint slots, then chunk slots for stripes.
//!
//! ```text
//! block 0            superblock (magic, version, uuids, index, geometry)
//! 1 .. 1+J           journal: checksummed, sequence-numbered records
//! 1+J .. 1+J+C       checkpoint slot A
//! 1+J+C .. 1+J+2C    checkpoint slot B
//! D0 ..              chunk slots, chunk_size bytes each (D0 chunk-aligned)
//! ```
//!
//! Every record (journal entry, checkpoint) starts on a block boundary with
//! a header carrying a magic, the sequence number, the payload length and an
//! xxh3 checksum over header and payload; a torn or stale record fails the
//! checksum and is ignored.

use std::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::pipeline::checksum::{Checksummer, Xxh3Sum, SEED_META};

/// Superblock magic.
pub const SB_MAGIC: &[u8; 8] = b"FLINTSB\0";
/// On-device format version.
pub const VERSION: u32 = 4;
/// Journal record magic.
pub const JOURNAL_MAGIC: u32 = 0x314a_4c46; // "FLJ1"
/// Checkpoint record magic.
pub const CHECKPOINT_MAGIC: u32 = 0x3143_4c46; // "FLC1"

/// Why on-device bytes were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// No Flint superblock (never formatted, or another program's data).
    NotFlint,
    /// A Flint superblock of a newer format version.
    Version {
        /// The version found.
        found: u32,
    },
    /// The bytes fail their checksum (torn write, bit rot, stale record).
    Checksum,
    /// The structure is malformed.
    Decode(DecodeError),
    /// No intact copy of a structure is left on any device.
    Damaged {
        /// What is damaged.
        what: &'static str,
    },
    /// The geometry cannot hold the layout.
    Geometry {
        /// What does not fit.
        reason: String,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NotFlint => write!(f, "no Flint superblock"),
            FormatError::Version { found } if *found > VERSION => write!(
                f,
                "format version {found} is newer than this Flint ({VERSION}); upgrade Flint"
            ),
            FormatError::Version { found } => write!(
                f,
                "format version {found} is older than this Flint's ({VERSION}: metadata, \
                 directories and stripe reference counts in on-device B+tree pages); copy \
                 the data out with the Flint that wrote it, then reformat"
            ),
            FormatError::Checksum => write!(f, "checksum mismatch"),
            FormatError::Decode(e) => write!(f, "{e}"),
            FormatError::Damaged { what } => write!(
                f,
                "the {what} is damaged on every device; restore the devices from a backup or reformat"
            ),
            FormatError::Geometry { reason } => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

impl From<DecodeError> for FormatError {
    fn from(e: DecodeError) -> Self {
        FormatError::Decode(e)
    }
}

/// Where things live on one device, in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Block size.
    pub block_size: u32,
    /// Blocks per chunk.
    pub chunk_blocks: u64,
    /// First journal block.
    pub journal_start: u64,
    /// Journal blocks.
    pub journal_blocks: u64,
    /// First block of checkpoint slot A (B follows it).
    pub checkpoint_start: u64,
    /// Blocks per checkpoint slot.
    pub checkpoint_blocks: u64,
    /// Distance from checkpoint slot A to slot B.
    pub checkpoint_stride: u64,
    /// First block of chunk slot 0.
    pub data_start: u64,
    /// Chunk slots.
    pub slots: u64,
    /// Shards the metadata regions and chunk slots are divided among.
    pub shards: u32,
    /// The shard this view belongs to (0 for the whole-device layout).
    pub shard: u32,
}

impl Layout {
    /// Lays out a device of `blocks` blocks.
    pub fn new(
        blocks: u64,
        block_size: u32,
        chunk_size: u32,
        journal_blocks: u64,
        checkpoint_blocks: u64,
        shards: u32,
    ) -> Result<Self, FormatError> {
        if shards == 0 || shards > 256 {
            return Err(FormatError::Geometry {
                reason: format!("{shards} shards: use 1 to 256"),
            });
        }
        if chunk_size == 0 || !chunk_size.is_multiple_of(block_size) {
            return Err(FormatError::Geometry {
                reason: format!(
                    "chunk size {chunk_size} is not a multiple of the block size {block_size}"
                ),
            });
        }
        let chunk_blocks = u64::from(chunk_size / block_size);
        let checkpoint_start = 1 + journal_blocks;
        let meta_end = checkpoint_start + 2 * checkpoint_blocks;
        let data_start = meta_end.next_multiple_of(chunk_blocks);
        let slots = blocks.saturating_sub(data_start) / chunk_blocks;
        if slots < u64::from(shards)
            || journal_blocks / u64::from(shards) < 8
            || checkpoint_blocks / u64::from(shards) < 2
        {
            return Err(FormatError::Geometry {
                reason: format!(
                    "a device of {blocks} blocks cannot hold a {journal_blocks}-block journal, \
                     two {checkpoint_blocks}-block checkpoints and a chunk for each of {shards} \
                     shards; use larger devices or fewer shards"
                ),
            });
        }
        Ok(Layout {
            block_size,
            chunk_blocks,
            journal_start: 1,
            journal_blocks,
            checkpoint_start,
            checkpoint_blocks,
            checkpoint_stride: checkpoint_blocks,
            data_start,
            slots,
            shards,
            shard: 0,
        })
    }

    /// The view of one shard: its slice of the journal and of both
    /// checkpoint slots; it owns the chunk slots `slot % shards == shard`.
    pub fn for_shard(&self, shard: u32) -> Layout {
        let n = u64::from(self.shards);
        let s = u64::from(shard);
        let jper = self.journal_blocks / n;
        let cper = self.checkpoint_blocks / n;
        Layout {
            journal_start: self.journal_start + s * jper,
            journal_blocks: jper,
            checkpoint_start: self.checkpoint_start + s * cper,
            checkpoint_blocks: cper,
            checkpoint_stride: self.checkpoint_stride,
            shard,
            ..*self
        }
    }

    /// Whether this view's shard owns chunk slot `slot`.
    pub fn owns(&self, slot: u64) -> bool {
        slot % u64::from(self.shards) == u64::from(self.shard)
    }

    /// Chunk slots this view's shard owns on one device.
    pub fn owned_slots(&self) -> u64 {
        (0..self.slots).filter(|s| self.owns(*s)).count() as u64
    }

    /// First block of chunk slot `slot`.
    pub fn slot_lba(&self, slot: u64) -> u64 {
        self.data_start + slot * self.chunk_blocks
    }

    /// First block of checkpoint slot `which` (0 or 1).
    pub fn checkpoint_lba(&self, which: u64) -> u64 {
        self.checkpoint_start + which * self.checkpoint_stride
    }
}

/// The superblock at block 0 of every device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The engine (node) this device belongs to.
    pub engine_uuid: u128,
    /// This device.
    pub device_uuid: u128,
    /// Position of this device in the engine.
    pub device_index: u32,
    /// Devices in the engine.
    pub device_count: u32,
    /// Block size.
    pub block_size: u32,
    /// Chunk size.
    pub chunk_size: u32,
    /// Device capacity in blocks.
    pub blocks: u64,
    /// Journal blocks.
    pub journal_blocks: u64,
    /// Blocks per checkpoint slot.
    pub checkpoint_blocks: u64,
    /// Shards (reactors' stores) the engine was formatted for.
    pub shards: u32,
}

impl Superblock {
    /// Encodes into one block of `block_size` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.buf.extend_from_slice(SB_MAGIC);
        w.u32(VERSION)
            .u128(self.engine_uuid)
            .u128(self.device_uuid)
            .u32(self.device_index)
            .u32(self.device_count)
            .u32(self.block_size)
            .u32(self.chunk_size)
            .u64(self.blocks)
            .u64(self.journal_blocks)
            .u64(self.checkpoint_blocks)
            .u32(self.shards);
        let sum = Xxh3Sum.checksum(SEED_META, &w.buf);
        w.u64(sum);
        w.buf.resize(self.block_size as usize, 0);
        w.buf
    }

    /// Decodes block 0.
    pub fn decode(block: &[u8]) -> Result<Self, FormatError> {
        if block.len() < 8 || &block[..8] != SB_MAGIC {
            return Err(FormatError::NotFlint);
        }
        let mut r = Reader::new(&block[8..]);
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(FormatError::Version { found: version });
        }
        let sb = Superblock {
            engine_uuid: r.u128("engine uuid")?,
            device_uuid: r.u128("device uuid")?,
            device_index: r.u32("device index")?,
            device_count: r.u32("device count")?,
            block_size: r.u32("block size")?,
            chunk_size: r.u32("chunk size")?,
            blocks: r.u64("blocks")?,
            journal_blocks: r.u64("journal blocks")?,
            checkpoint_blocks: r.u64("checkpoint blocks")?,
            shards: r.u32("shards")?,
        };
        let end = 8 + r.pos();
        let sum = r.u64("checksum")?;
        if Xxh3Sum.checksum(SEED_META, &block[..end]) != sum {
            return Err(FormatError::Checksum);
        }
        if sb.device_index >= sb.device_count || !sb.block_size.is_power_of_two() {
            return Err(FormatError::Decode(DecodeError {
                what: "superblock geometry",
            }));
        }
        Ok(sb)
    }

    /// The layout this superblock describes.
    pub fn layout(&self) -> Result<Layout, FormatError> {
        Layout::new(
            self.blocks,
            self.block_size,
            self.chunk_size,
            self.journal_blocks,
            self.checkpoint_blocks,
            self.shards,
        )
    }
}

const RECORD_HEADER: usize = 4 + 8 + 4 + 8;

/// Frames `payload` as a record of `magic` with sequence `seq`, padded to
/// whole blocks.
pub fn encode_record(magic: u32, seq: u64, payload: &[u8], block_size: usize) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(magic).u64(seq).u32(payload.len() as u32);
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED_META);
    h.update(&w.buf);
    h.update(payload);
    w.u64(h.digest());
    w.buf.extend_from_slice(payload);
    let len = w.buf.len().next_multiple_of(block_size);
    w.buf.resize(len, 0);
    w.buf
}

/// Blocks a record with a payload of `len` bytes occupies.
pub fn record_blocks(len: usize, block_size: usize) -> u64 {
    (RECORD_HEADER + len).div_ceil(block_size) as u64
}

/// Reads the header of a record at the start of `buf`: (seq, payload length).
pub fn peek_record(magic: u32, buf: &[u8]) -> Option<(u64, usize)> {
    let mut r = Reader::new(buf);
    if r.u32("magic").ok()? != magic {
        return None;
    }
    let seq = r.u64("seq").ok()?;
    let len = r.u32("len").ok()? as usize;
    Some((seq, len))
}

/// Decodes a whole record at the start of `buf`: (seq, payload).
pub fn decode_record(magic: u32, buf: &[u8]) -> Result<(u64, &[u8]), FormatError> {
    let mut r = Reader::new(buf);
    if r.u32("record magic")? != magic {
        return Err(FormatError::NotFlint);
    }
    let seq = r.u64("record seq")?;
    let len = r.u32("record length")? as usize;
    let sum = r.u64("record checksum")?;
    if r.remaining() < len {
        return Err(FormatError::Checksum);
    }
    let payload = &buf[RECORD_HEADER..RECORD_HEADER + len];
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED_META);
    h.update(&buf[..16]);
    h.update(payload);
    if h.digest() != sum {
        return Err(FormatError::Checksum);
    }
    Ok((seq, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            engine_uuid: 0x1234,
            device_uuid: 0x5678,
            device_index: 2,
            device_count: 6,
            block_size: 4096,
            chunk_size: 128 << 10,
            blocks: 1 << 18,
            journal_blocks: 1024,
            checkpoint_blocks: 256,
            shards: 2,
        }
    }

    #[test]
    fn superblock_round_trips_and_rejects_damage() {
        let b = sb().encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(Superblock::decode(&b).unwrap(), sb());
        assert_eq!(Superblock::decode(&[0u8; 4096]), Err(FormatError::NotFlint));
        // 88 bytes of fields and an 8-byte checksum; the rest is padding.
        for i in 8..96 {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(Superblock::decode(&bad).is_err(), "flip at {i} accepted");
        }
        for cut in 0..96 {
            assert!(Superblock::decode(&b[..cut]).is_err());
        }
        let mut newer = b.clone();
        newer[8] = 9;
        assert_eq!(
            Superblock::decode(&newer),
            Err(FormatError::Version { found: 9 })
        );
    }

    #[test]
    fn layout_places_regions_in_order() {
        let l = sb().layout().unwrap();
        assert_eq!(l.journal_start, 1);
        assert_eq!(l.checkpoint_lba(0), 1025);
        assert_eq!(l.checkpoint_lba(1), 1281);
        assert!(l.data_start >= 1537 && l.data_start.is_multiple_of(32));
        assert!(l.slot_lba(l.slots - 1) + l.chunk_blocks <= 1 << 18);
        assert!(Layout::new(100, 4096, 128 << 10, 1024, 256, 1).is_err());
        // Shards split the metadata regions and own alternate slots.
        let s1 = l.for_shard(1);
        assert_eq!(s1.journal_start, 1 + 512);
        assert_eq!(s1.journal_blocks, 512);
        assert_eq!(s1.checkpoint_lba(0), 1025 + 128);
        assert_eq!(s1.checkpoint_lba(1), 1281 + 128);
        assert!(s1.owns(3) && !s1.owns(4) && l.for_shard(0).owns(4));
    }

    #[test]
    fn records_detect_torn_and_stale_bytes() {
        let rec = encode_record(JOURNAL_MAGIC, 77, b"hello journal", 4096);
        assert_eq!(rec.len(), 4096);
        assert_eq!(
            decode_record(JOURNAL_MAGIC, &rec).unwrap(),
            (77, &b"hello journal"[..])
        );
        assert_eq!(peek_record(JOURNAL_MAGIC, &rec), Some((77, 13)));
        assert!(decode_record(CHECKPOINT_MAGIC, &rec).is_err());
        let mut torn = rec.clone();
        torn[30] ^= 1;
        assert_eq!(
            decode_record(JOURNAL_MAGIC, &torn),
            Err(FormatError::Checksum)
        );
        assert!(decode_record(JOURNAL_MAGIC, &rec[..20]).is_err());
        let big = vec![7u8; 10_000];
        let rec = encode_record(JOURNAL_MAGIC, 1, &big, 4096);
        assert_eq!(rec.len() as u64, record_blocks(big.len(), 4096) * 4096);
        assert_eq!(decode_record(JOURNAL_MAGIC, &rec).unwrap().1, &big[..]);
    }
}
