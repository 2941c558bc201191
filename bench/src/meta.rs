//! `flint-bench meta`: mdtest-like metadata rates — create, stat, readdir,
//! rename and unlink over N files in D directories — for Flint's namespace
//! in-process, beside the same operations through the kernel on tmpfs and
//! on the disk's file system, in the same run.
//!
//! Flint's columns:
//! - *namespace*: the namespace layer alone on its copy-on-write B+tree with
//!   the pages in memory (`MemPages`), one core, commits included;
//! - *engine*: the engine in-process (one shard on one reactor, RAM
//!   devices): every operation a journaled record, pages written through
//!   the queue pairs, a sync every 10,000 operations;
//! - *protocol*: the same engine served over loopback UDP (the socket polled
//!   by the reactor, as the appliance serves), `--clients` client threads
//!   each on its own directories, paths on the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use flint_dataplane::nic::udp::UdpPort;
use flint_engine::engine::root_ctx;
use flint_engine::net::client::{Client, ClientConfig};
use flint_engine::net::server::{Server, ServerConfig};

use flint_engine::meta::btree::{MemPages, Pager, PAGE};
use flint_engine::meta::namespace::{Ctx, RenameFlags, Standalone, ROOT};

use crate::args::Args;
use crate::report::{ratio, Table};

/// Operations per second of each phase.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    mkdir: f64,
    create: f64,
    stat: f64,
    readdir: f64,
    rename: f64,
    unlink: f64,
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn run_flint(files: usize, dirs: usize, cache_mib: usize) -> Result<Rates, String> {
    let e = |x: flint_engine::meta::namespace::NsError| x.to_string();
    let ctx = Ctx {
        uid: 0,
        gid: 0,
        now: now(),
    };
    let pager = Pager::new(1, cache_mib << 20);
    let mut ns = Standalone::new(MemPages::new(), pager, ctx, 0o755).map_err(e)?;
    let commit = |ns: &mut Standalone<MemPages>| -> Result<(), String> {
        for p in ns.commit().map_err(e)? {
            ns.io.free(p.addr);
        }
        Ok(())
    };
    let mut d = Vec::with_capacity(dirs);
    let mut r = Rates::default();
    let t = Instant::now();
    for i in 0..dirs {
        d.push(
            ns.ns()
                .mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, ctx)
                .map_err(e)?
                .ino,
        );
    }
    commit(&mut ns)?;
    r.mkdir = rate(dirs, t);
    let name = |i: usize| format!("file-{i:08}");
    let t = Instant::now();
    for i in 0..files {
        ns.ns()
            .create(d[i % dirs], name(i).as_bytes(), 0o644, ctx)
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.create = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        let a = ns.ns().lookup(d[i % dirs], name(i).as_bytes()).map_err(e)?;
        std::hint::black_box(a);
    }
    r.stat = rate(files, t);
    let t = Instant::now();
    let mut listed = 0;
    for &dir in &d {
        let mut cookie = 0;
        loop {
            let page = ns.ns().readdir(dir, cookie, 1024).map_err(e)?;
            let Some(last) = page.last() else { break };
            cookie = last.cookie;
            listed += page.len();
        }
    }
    if listed != files {
        return Err(format!("readdir listed {listed} of {files} entries"));
    }
    r.readdir = rate(listed, t);
    let t = Instant::now();
    for i in 0..files {
        let dir = d[i % dirs];
        let to = format!("moved-{i:08}");
        ns.ns()
            .rename(
                dir,
                name(i).as_bytes(),
                dir,
                to.as_bytes(),
                RenameFlags::default(),
                ctx,
            )
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.rename = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        ns.ns()
            .unlink(d[i % dirs], format!("moved-{i:08}").as_bytes(), ctx)
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.unlink = rate(files, t);
    Ok(r)
}

/// Ops between syncs of the engine.
const SYNC_EVERY: usize = 10_000;

fn run_engine(files: usize, dirs: usize, shards: u32) -> Result<Rates, String> {
    let er = |x: flint_engine::store::StoreError| x.to_string();
    let (e, _, fs) = crate::remote::bench_node(3, 2 << 30, shards)?;
    let root = e.root_of(fs);
    let mut d = Vec::with_capacity(dirs);
    let mut r = Rates::default();
    let t = Instant::now();
    for i in 0..dirs {
        let name = format!("d{i}");
        d.push(
            e.make(
                root,
                name.as_bytes(),
                libc::S_IFDIR | 0o755,
                0,
                &[],
                root_ctx(),
            )
            .map_err(er)?
            .ino,
        );
    }
    e.sync().map_err(er)?;
    r.mkdir = rate(dirs, t);
    let name = |i: usize| format!("file-{i:08}");
    let synced = |i: usize| -> Result<(), String> {
        if i % SYNC_EVERY == SYNC_EVERY - 1 {
            e.sync().map_err(er)?;
        }
        Ok(())
    };
    let t = Instant::now();
    for i in 0..files {
        let ctx = root_ctx();
        e.make(
            d[i % dirs],
            name(i).as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &[],
            ctx,
        )
        .map_err(er)?;
        synced(i)?;
    }
    e.sync().map_err(er)?;
    r.create = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        std::hint::black_box(e.lookup_at(d[i % dirs], name(i).as_bytes()).map_err(er)?);
    }
    r.stat = rate(files, t);
    let t = Instant::now();
    let mut listed = 0;
    for &dir in &d {
        let mut cookie = 0;
        loop {
            let page = e.readdir(dir, cookie, 1024).map_err(er)?;
            let Some(last) = page.last() else { break };
            cookie = last.cookie;
            listed += page.len();
        }
    }
    if listed != files {
        return Err(format!("engine readdir listed {listed} of {files} entries"));
    }
    r.readdir = rate(listed, t);
    let t = Instant::now();
    for i in 0..files {
        let dir = d[i % dirs];
        let to = format!("moved-{i:08}");
        let flags = RenameFlags::default();
        e.rename_at(
            dir,
            name(i).as_bytes(),
            dir,
            to.as_bytes(),
            flags,
            root_ctx(),
        )
        .map_err(er)?;
        synced(i)?;
    }
    e.sync().map_err(er)?;
    r.rename = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        let to = format!("moved-{i:08}");
        e.unlink_at(d[i % dirs], to.as_bytes(), root_ctx())
            .map_err(er)?;
        synced(i)?;
    }
    e.sync().map_err(er)?;
    r.unlink = rate(files, t);
    e.close().map_err(er)?;
    Ok(r)
}

/// One protocol phase: every client thread runs `op` over its own share
/// of the files; the rate is all of them over the slowest.
fn clients_phase(
    clients: &mut [Client],
    files: usize,
    op: &(dyn Fn(&mut Client, usize) -> Result<usize, String> + Sync),
) -> Result<f64, String> {
    let n = clients.len();
    let t = Instant::now();
    let done: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(k, c)| {
                s.spawn(move || {
                    let mut count = 0;
                    for i in (k..files).step_by(n) {
                        count += op(c, i)?;
                    }
                    Ok(count)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    let mut total = 0;
    for d in done {
        total += d?;
    }
    Ok(rate(total, t))
}

fn run_protocol(files: usize, dirs: usize, clients: usize, shards: u32) -> Result<Rates, String> {
    let ce = |x: flint_engine::net::client::ClientError| x.to_string();
    let (e, org, _) = crate::remote::bench_node(3, 2 << 30, shards)?;
    let engine = Arc::new(e);
    let port = UdpPort::bind("127.0.0.1:0".parse::<SocketAddr>().expect("valid"))
        .map(|p| Arc::new(p) as Arc<dyn flint_dataplane::nic::Port>)
        .map_err(|e| e.to_string())?;
    let server = Server::start_polled(engine.clone(), vec![(0, port)], ServerConfig::default())
        .map_err(|e| e.to_string())?;
    let mut cs = (0..clients.max(1))
        .map(|_| Client::connect(server.addr(), "bench", &org.key, ClientConfig::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ce)?;
    let dirs = dirs.max(cs.len());
    let mkdir = clients_phase(&mut cs, dirs, &|c, i| {
        c.mkdir("bench", &format!("d{i}"), 0o755).map_err(ce)?;
        Ok(1)
    })?;
    // Client k works in the directories i % dirs of its files i = k (mod n).
    let path = move |i: usize, stem: &str| format!("d{}/{stem}-{i:08}", i % dirs);
    let create = clients_phase(&mut cs, files, &|c, i| {
        c.open("bench", &path(i, "file"), true).map_err(ce)?;
        Ok(1)
    })?;
    cs[0].sync().map_err(ce)?;
    let stat = clients_phase(&mut cs, files, &|c, i| {
        c.stat_path("bench", &path(i, "file")).map_err(ce)?;
        Ok(1)
    })?;
    let readdir = clients_phase(&mut cs, dirs, &|c, dir| {
        let mut n = 0;
        let mut cookie = 0;
        loop {
            let page = c
                .list_page("bench", &format!("d{dir}"), cookie, 1024)
                .map_err(ce)?;
            let Some(last) = page.last() else {
                return Ok(n);
            };
            cookie = last.cookie;
            n += page.len();
        }
    })?;
    let rename = clients_phase(&mut cs, files, &|c, i| {
        c.rename("bench", &path(i, "file"), &path(i, "moved"), 0)
            .map_err(ce)?;
        Ok(1)
    })?;
    let unlink = clients_phase(&mut cs, files, &|c, i| {
        c.unlink("bench", &path(i, "moved")).map_err(ce)?;
        Ok(1)
    })?;
    cs[0].sync().map_err(ce)?;
    drop(cs);
    server.stop();
    Ok(Rates {
        mkdir,
        create,
        stat,
        readdir,
        rename,
        unlink,
    })
}

fn run_kernel(root: &std::path::Path, files: usize, dirs: usize) -> Result<Rates, String> {
    let e = |x: std::io::Error| format!("{}: {x}", root.display());
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).map_err(e)?;
    let d: Vec<std::path::PathBuf> = (0..dirs).map(|i| root.join(format!("d{i}"))).collect();
    let mut r = Rates::default();
    let t = Instant::now();
    for p in &d {
        std::fs::create_dir(p).map_err(e)?;
    }
    r.mkdir = rate(dirs, t);
    let name = |i: usize| d[i % dirs].join(format!("file-{i:08}"));
    let moved = |i: usize| d[i % dirs].join(format!("moved-{i:08}"));
    let t = Instant::now();
    for i in 0..files {
        std::fs::File::create(name(i)).map_err(e)?;
    }
    r.create = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        std::hint::black_box(std::fs::metadata(name(i)).map_err(e)?);
    }
    r.stat = rate(files, t);
    let t = Instant::now();
    let mut listed = 0;
    for p in &d {
        listed += std::fs::read_dir(p).map_err(e)?.count();
    }
    r.readdir = rate(listed, t);
    let t = Instant::now();
    for i in 0..files {
        std::fs::rename(name(i), moved(i)).map_err(e)?;
    }
    r.rename = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        std::fs::remove_file(moved(i)).map_err(e)?;
    }
    r.unlink = rate(files, t);
    let _ = std::fs::remove_dir_all(root);
    Ok(r)
}

pub fn main(mut a: Args) -> Result<(), String> {
    let files = a.get("files", 200_000usize)?;
    let dirs = a.get("dirs", 100usize)?.max(1);
    let cache = a.get("cache-mib", 256usize)?;
    let disk: String = a.get("disk-dir", "/var/tmp/flint-bench-meta".to_string())?;
    let shm: String = a.get("tmpfs-dir", "/dev/shm/flint-bench-meta".to_string())?;
    let clients = a.get("clients", 4usize)?.max(1);
    let proto_files = a.get("protocol-files", files.min(50_000))?;
    let shards = a.get("shards", 1u32)?.max(1);
    let json = a.flag("json");
    a.finish()?;
    let flint = run_flint(files, dirs, cache)?;
    let engine = run_engine(files, dirs, shards)?;
    let proto = run_protocol(proto_files, dirs, clients, shards)?;
    let tmpfs = run_kernel(std::path::Path::new(&shm), files, dirs)?;
    let ext = run_kernel(std::path::Path::new(&disk), files, dirs)?;
    let phases = |r: &Rates| {
        [
            ("mkdir", r.mkdir),
            ("create", r.create),
            ("stat", r.stat),
            ("readdir", r.readdir),
            ("rename", r.rename),
            ("unlink", r.unlink),
        ]
    };
    if json {
        let rows: Vec<serde_json::Value> = (0..6)
            .map(|k| {
                let (op, f) = phases(&flint)[k];
                let (g, p) = (phases(&engine)[k].1, phases(&proto)[k].1);
                let (t, x) = (phases(&tmpfs)[k].1, phases(&ext)[k].1);
                serde_json::json!({
                    "op": op, "namespace_per_sec": f, "engine_per_sec": g,
                    "protocol_per_sec": p, "tmpfs_per_sec": t, "disk_fs_per_sec": x,
                    "engine_vs_tmpfs": g / t.max(1.0), "protocol_vs_tmpfs": p / t.max(1.0),
                })
            })
            .collect();
        let v = serde_json::json!({
            "bench": "meta", "files": files, "protocol_files": proto_files, "dirs": dirs,
            "clients": clients, "shards": shards, "cache_mib": cache, "page": PAGE, "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "meta: {files} files in {dirs} directories (protocol: {proto_files} files, \
         {clients} clients); Flint's namespace alone (pages in memory, {cache} MiB cache), \
         the engine in-process ({shards} shards, RAM devices, sync every {SYNC_EVERY}) and over \
         loopback UDP, \
         vs the kernel on tmpfs ({shm}) and on {disk}"
    );
    let mut t = Table::new(&[
        "op",
        "namespace/s",
        "engine/s",
        "protocol/s",
        "tmpfs/s",
        "disk fs/s",
        "engine vs tmpfs",
        "protocol vs tmpfs",
    ]);
    for k in 0..6 {
        let (op, f) = phases(&flint)[k];
        let (g, p) = (phases(&engine)[k].1, phases(&proto)[k].1);
        let (tm, x) = (phases(&tmpfs)[k].1, phases(&ext)[k].1);
        t.row(vec![
            op.to_string(),
            format!("{f:.0}"),
            format!("{g:.0}"),
            format!("{p:.0}"),
            format!("{tm:.0}"),
            format!("{x:.0}"),
            ratio(g, tm),
            ratio(p, tm),
        ]);
    }
    print!("{t}");
    Ok(())
}
