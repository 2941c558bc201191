//! `flint-bench ec`: Flint's erasure-coding stage (through its `Codec`
//! trait, best kernel for this CPU) beside ISA-L's `ec_encode_data` called
//! directly, for the codes the engine offers.

use std::time::{Duration, Instant};

use flint_engine::pipeline::ec::{best_kernel, Codec};

use crate::args::Args;
use crate::report::{ratio, Table};

/// Runs `f` repeatedly for about `secs`; returns calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

#[cfg(feature = "isal")]
fn isal_rate(
    k: usize,
    m: usize,
    data: &[Vec<u8>],
    parity: &mut [Vec<u8>],
    secs: f64,
) -> Option<f64> {
    let mut a = vec![0u8; (k + m) * k];
    let mut tables = vec![0u8; 32 * k * m];
    // SAFETY: `a` holds (k+m)*k coefficients; tables 32*k*m bytes.
    unsafe {
        isal_sys::gf_gen_cauchy1_matrix(a.as_mut_ptr(), (k + m) as i32, k as i32);
        isal_sys::ec_init_tables(
            k as i32,
            m as i32,
            a[k * k..].as_mut_ptr(),
            tables.as_mut_ptr(),
        );
    }
    let len = data[0].len();
    let mut src: Vec<*mut u8> = data.iter().map(|d| d.as_ptr().cast_mut()).collect();
    let mut dst: Vec<*mut u8> = parity.iter_mut().map(|p| p.as_mut_ptr()).collect();
    Some(rate(secs, || {
        // SAFETY: k sources and m destinations of `len` bytes; ISA-L only
        // reads the sources.
        unsafe {
            isal_sys::ec_encode_data(
                len as i32,
                k as i32,
                m as i32,
                tables.as_mut_ptr(),
                src.as_mut_ptr(),
                dst.as_mut_ptr(),
            )
        }
    }))
}

#[cfg(not(feature = "isal"))]
fn isal_rate(_: usize, _: usize, _: &[Vec<u8>], _: &mut [Vec<u8>], _: f64) -> Option<f64> {
    None
}

/// `flint-bench ec`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 1.0f64)?;
    let stripe = a.get("stripe", 1usize << 20)?;
    let json = a.flag("json");
    a.finish()?;
    let kernel = best_kernel();
    let mut rows = Vec::new();
    for (k, m) in [(8usize, 2usize), (7, 2), (7, 4), (4, 2)] {
        let chunk = (stripe / k).next_multiple_of(64);
        let data: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..chunk).map(|b| (b * 31 + i * 7) as u8).collect())
            .collect();
        let mut parity = vec![vec![0u8; chunk]; m];
        let codec = Codec::new(k, m, kernel.clone()).map_err(|e| e.to_string())?;
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let flint = rate(secs, || {
            let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
            let _ = codec.encode(&refs, &mut outs);
        });
        let ours = parity.clone();
        let isal = isal_rate(k, m, &data, &mut parity, secs);
        if isal.is_some() && parity != ours {
            return Err(format!("{k}+{m}: ISA-L and Flint parity differ"));
        }
        let bytes = (k * chunk) as f64;
        rows.push((
            k,
            m,
            chunk,
            flint * bytes / 1e9,
            isal.map(|r| r * bytes / 1e9),
        ));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(k, m, chunk, f, i)| {
                serde_json::json!({"k": k, "m": m, "chunk": chunk, "flint_gbps": f,
                    "isal_gbps": i, "ratio": i.map(|i| f / i)})
            })
            .collect();
        let out = serde_json::json!({"bench": "ec", "kernel": kernel.name(), "results": v});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "ec: encode, {} KiB stripes, Flint kernel {}",
        stripe >> 10,
        kernel.name()
    );
    let mut t = Table::new(&["code", "chunk", "flint GB/s", "ISA-L GB/s", "ratio"]);
    for (k, m, chunk, f, i) in rows {
        t.row(vec![
            format!("{k}+{m}"),
            format!("{chunk}"),
            format!("{f:.1}"),
            i.map_or("-".into(), |i| format!("{i:.1}")),
            i.map_or("(build with --features isal)".into(), |i| ratio(f, i)),
        ]);
    }
    print!("{t}");
    Ok(())
}
