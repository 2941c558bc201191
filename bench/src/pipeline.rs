//! `flint-bench pipeline`: the whole write pipeline on one core
//! (fingerprint + dedup with verify-on-hit + compress + pack + EC +
//! checksum) beside the same codecs chained with no engine around them,
//! on incompressible, text-like and mixed datasets, with the reduction
//! ratios and write amplification next to the ideal. Sealed stripes are
//! handed off as to a DMA engine (not copied) in both columns.

use std::time::Instant;

use flint_engine::pipeline::checksum::{Checksummer, Xxh3Sum, SEED_CHUNK};
use flint_engine::pipeline::compress::{self, Compressor, Lz4Probe};
use flint_engine::pipeline::ec::{best_kernel, Codec};
use flint_engine::pipeline::fingerprint::{Fingerprinter, Xxh3};
use flint_engine::pipeline::{
    BlockAddr, BlockReader, PipelineConfig, Placed, Stages, WritePipeline,
};

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

const BS: usize = 4096;

fn random_block(r: &mut Rng, b: &mut [u8]) {
    for c in b.chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes()[..c.len()]);
    }
}

fn text_block(r: &mut Rng, b: &mut [u8]) {
    const WORDS: [&str; 24] = [
        "the",
        "stripe",
        "chunk",
        "parity",
        "reactor",
        "queue",
        "of",
        "and",
        "checkpoint",
        "journal",
        "shard",
        "core",
        "write",
        "read",
        "block",
        "device",
        "flint",
        "to",
        "in",
        "is",
        "file",
        "data",
        "node",
        "a",
    ];
    let mut i = 0;
    while i < b.len() {
        let w = r.next();
        let word = if w.is_multiple_of(5) {
            format!("{} ", w % 100_000)
        } else {
            format!("{} ", WORDS[(w >> 8) as usize % WORDS.len()])
        };
        let n = word.len().min(b.len() - i);
        b[i..i + n].copy_from_slice(&word.as_bytes()[..n]);
        i += n;
    }
}

/// A dataset: blocks, and how many are exact repeats of an earlier block.
struct Dataset {
    name: &'static str,
    data: Vec<u8>,
    dups: usize,
}

fn dataset(name: &'static str, mib: usize, text_pct: u64, dup_pct: u64) -> Dataset {
    let blocks = mib * 256;
    let mut data = vec![0u8; blocks * BS];
    let mut r = Rng::new(0x5eed_0000 + text_pct * 131 + dup_pct);
    let mut dups = 0;
    for i in 0..blocks {
        let roll = r.next() % 100;
        if i > 0 && roll < dup_pct {
            let src = (r.next() as usize) % i;
            data.copy_within(src * BS..(src + 1) * BS, i * BS);
            dups += 1;
            continue;
        }
        let b = &mut data[i * BS..(i + 1) * BS];
        if r.next() % 100 < text_pct {
            text_block(&mut r, b);
        } else {
            random_block(&mut r, b);
        }
    }
    Dataset { name, data, dups }
}

/// Serves verify-on-hit reads. Sealed stripes go to the devices by DMA, so
/// neither column copies them anywhere; a read of a stored block re-derives
/// its stored bytes from the dataset block it came from.
struct Origins<'a> {
    data: &'a [u8],
    /// (stripe, chunk, offset) of each new block, in the order stored —
    /// which is address order, so lookups are a binary search.
    at: Vec<((u64, u16, u32), usize)>,
    scratch: Vec<u8>,
}

impl BlockReader for Origins<'_> {
    fn read_stored(&mut self, a: &BlockAddr, out: &mut [u8]) -> bool {
        let key = (a.stripe, a.chunk, a.offset);
        let Ok(pos) = self.at.binary_search_by_key(&key, |e| e.0) else {
            return false;
        };
        let i = self.at[pos].1;
        let block = &self.data[i * BS..(i + 1) * BS];
        if !a.compressed {
            out.copy_from_slice(block);
            return true;
        }
        match Lz4Probe.compress(block, &mut self.scratch) {
            Some(n) if n == out.len() => {
                out.copy_from_slice(&self.scratch[..n]);
                true
            }
            _ => false,
        }
    }
}

struct Run {
    gbps: f64,
    dedup_ratio: f64,
    comp_ratio: f64,
    wa: f64,
    ideal_wa: f64,
}

fn run_flint(ds: &Dataset, k: usize, m: usize, chunk: usize) -> Result<Run, String> {
    let cfg = PipelineConfig {
        k,
        m,
        chunk_size: chunk,
        block_size: BS,
        reduction: true,
    };
    let blocks = ds.data.len() / BS;
    let mut p =
        WritePipeline::new(cfg, Stages::fast_sized(blocks), 0).map_err(|e| e.to_string())?;
    let mut origins = Origins {
        data: &ds.data,
        at: Vec::with_capacity(blocks),
        scratch: vec![0; compress::bound(BS)],
    };
    let mut stripes = 0u64;
    let f0 = crate::report::minor_faults();
    let t0 = Instant::now();
    let mut placed = Vec::with_capacity(64);
    for (batch_no, batch) in ds.data.chunks(64 * BS).enumerate() {
        let blocks: Vec<&[u8]> = batch.chunks(BS).collect();
        placed.clear();
        p.write_blocks(1, &blocks, &mut origins, &mut |_| stripes += 1, &mut placed);
        for (j, (pl, _)) in placed.iter().enumerate() {
            if let Placed::New(addr) = pl {
                origins
                    .at
                    .push(((addr.stripe, addr.chunk, addr.offset), batch_no * 64 + j));
            }
        }
    }
    p.seal(&mut |_| stripes += 1);
    let secs = t0.elapsed().as_secs_f64();
    let faults = crate::report::minor_faults() - f0;
    if faults > 10_000 {
        eprintln!("  note: {faults} page faults during the timed loop");
    }
    let st = p.stats();
    let unique = st.blocks - st.dedup_hits;
    let comp_ratio = (unique * BS as u64) as f64 / st.packed.max(1) as f64;
    Ok(Run {
        gbps: st.logical as f64 / secs / 1e9,
        dedup_ratio: st.blocks as f64 / unique.max(1) as f64,
        comp_ratio,
        wa: (st.data_written + st.parity_written) as f64 / st.logical as f64,
        ideal_wa: (1.0 - ds.dups as f64 / st.blocks as f64) / comp_ratio * (k + m) as f64
            / k as f64,
    })
}

/// The same codecs with nothing around them: fingerprint, probe + LZ4,
/// append into chunks, encode, checksum, copy out.
fn run_raw(ds: &Dataset, k: usize, m: usize, chunk: usize) -> Result<f64, String> {
    let codec = Codec::new(k, m, best_kernel()).map_err(|e| e.to_string())?;
    let mut stripe = vec![0u8; (k + m) * chunk];
    let mut scratch = vec![0u8; compress::bound(BS)];
    let mut fill = 0usize;
    let mut sink = 0u64;
    let mut sums = 0u64;
    let t0 = Instant::now();
    let mut flush = |stripe: &mut Vec<u8>| {
        let (d, p) = stripe.split_at_mut(k * chunk);
        let data: Vec<&[u8]> = d.chunks(chunk).collect();
        let mut parity: Vec<&mut [u8]> = p.chunks_mut(chunk).collect();
        let _ = codec.encode(&data, &mut parity);
        for c in stripe.chunks(chunk) {
            sums ^= Xxh3Sum.checksum(SEED_CHUNK, c);
        }
    };
    for block in ds.data.chunks(BS) {
        sink ^= Xxh3.fingerprint(block) as u64;
        let payload: &[u8] = match Lz4Probe.compress(block, &mut scratch) {
            Some(n) => &scratch[..n],
            None => block,
        };
        if fill + payload.len() > k * chunk {
            flush(&mut stripe);
            fill = 0;
        }
        stripe[fill..fill + payload.len()].copy_from_slice(payload);
        fill += payload.len();
    }
    flush(&mut stripe);
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box((sink, sums));
    Ok(ds.data.len() as f64 / secs / 1e9)
}

/// `flint-bench pipeline`.
pub fn main(mut a: Args) -> Result<(), String> {
    let mib = a.get("size-mib", 128usize)?;
    let k = a.get("k", 8usize)?;
    let m = a.get("m", 2usize)?;
    let chunk = a.get("chunk", 128usize << 10)?;
    let only = a.get("dataset", "all".to_string())?;
    let json = a.flag("json");
    a.finish()?;
    let sets: Vec<Dataset> = [
        ("random", "incompressible, unique", 0, 0),
        ("text", "text-like, unique", 100, 0),
        ("mixed", "mixed 50% text, 25% duplicates", 50, 25),
    ]
    .into_iter()
    .filter(|(key, ..)| only == "all" || only == *key)
    .map(|(_, name, text, dup)| dataset(name, mib, text, dup))
    .collect();
    if sets.is_empty() {
        return Err(format!("--dataset {only}: use random, text, mixed or all"));
    }
    let mut rows = Vec::new();
    for ds in &sets {
        let raw = run_raw(ds, k, m, chunk)?;
        let flint = run_flint(ds, k, m, chunk)?;
        rows.push((ds.name, ds.dups, flint, raw));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, dups, f, raw)| {
                serde_json::json!({"dataset": name, "duplicates": dups, "flint_gbps": f.gbps,
                    "raw_gbps": raw, "ratio": f.gbps / raw, "dedup_ratio": f.dedup_ratio,
                    "compression_ratio": f.comp_ratio, "write_amplification": f.wa,
                    "ideal_write_amplification": f.ideal_wa})
            })
            .collect();
        let out = serde_json::json!({"bench": "pipeline", "k": k, "m": m, "chunk": chunk,
            "mib": mib, "results": v});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "pipeline: {mib} MiB per dataset, 4 KiB blocks, {k}+{m}, {} KiB chunks, one core",
        chunk >> 10
    );
    let mut t = Table::new(&[
        "dataset",
        "flint GB/s",
        "raw chain GB/s",
        "ratio",
        "dedup",
        "compress",
        "write ampl.",
        "ideal",
    ]);
    for (name, _, f, raw) in rows {
        t.row(vec![
            name.to_string(),
            format!("{:.2}", f.gbps),
            format!("{raw:.2}"),
            ratio(f.gbps, raw),
            format!("{:.2}x", f.dedup_ratio),
            format!("{:.2}x", f.comp_ratio),
            format!("{:.3}", f.wa),
            format!("{:.3}", f.ideal_wa),
        ]);
    }
    print!("{t}");
    Ok(())
}
