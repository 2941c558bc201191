//! The node's figures in Prometheus text format (`GET /metrics`): space,
//! devices, operations, protocol counters, and per snapshot, quota and
//! filesystem group.

use super::mgmt::Node;

/// Prometheus text exposition of the node's figures.
pub(super) fn metrics(node: &Node) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let e = &node.engine;
    if let Some(t) = &node.nvmf {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &t.stats;
        let counters = [
            (
                "flint_nvmf_connections_total",
                "NVMe/TCP connections accepted.",
                &st.connections,
            ),
            (
                "flint_nvmf_commands_total",
                "NVMe/TCP commands answered.",
                &st.commands,
            ),
            (
                "flint_nvmf_errors_total",
                "NVMe/TCP commands answered with an error status.",
                &st.errors,
            ),
            (
                "flint_nvmf_read_bytes_total",
                "Bytes NVMe/TCP hosts read.",
                &st.read_bytes,
            ),
            (
                "flint_nvmf_write_bytes_total",
                "Bytes NVMe/TCP hosts wrote.",
                &st.write_bytes,
            ),
            (
                "flint_nvmf_terminated_total",
                "NVMe/TCP connections ended by a malformed PDU.",
                &st.terminated,
            ),
            (
                "flint_nvmf_kato_expired_total",
                "NVMe/TCP controllers torn down after their keep-alive timeout.",
                &st.kato_expired,
            ),
            (
                "flint_nvmf_refused_total",
                "NVMe/TCP connects refused (subsystem, host, values).",
                &st.refused,
            ),
        ];
        for (name, help, v) in counters {
            gauge(
                name,
                help,
                "counter",
                &[(String::new(), v.load(Relaxed) as f64)],
            );
        }
        gauge(
            "flint_nvmf_controllers",
            "Live NVMe/TCP controllers (host admin queues).",
            "gauge",
            &[(String::new(), t.controllers() as f64)],
        );
    }
    if let Some((id, view)) = &node.cluster {
        let st = view.status(*id);
        let num = |k: &str| st[k].as_u64().unwrap_or(0) as f64;
        let rows = [
            ("flint_cluster_epoch", "The map epoch the node serves at.", "gauge", num("epoch")),
            ("flint_cluster_coordinator", "1 while this node is the coordinator.", "gauge",
                f64::from(u8::from(view.is_coordinator()))),
            ("flint_cluster_fence_open_ms", "Milliseconds the node may still acknowledge without renewing its lease (0: fenced).", "gauge", num("fence_open_ms")),
            ("flint_cluster_fenced_requests_total", "Requests held because the node was fenced.", "counter", num("fenced_requests")),
            ("flint_cluster_shards", "Shards the map gives this node.", "gauge", num("shards")),
            ("flint_cluster_maps_written_total", "Maps this node wrote as coordinator.", "counter", num("maps_written")),
            ("flint_cluster_etcd_errors_total", "Calls to etcd that failed.", "counter", num("etcd_errors")),
        ];
        for (name, help, kind, v) in rows {
            gauge(name, help, kind, &[(String::new(), v)]);
        }
    }
    gauge(
        "flint_up",
        "1 while the node serves.",
        "gauge",
        &[(String::new(), 1.0)],
    );
    gauge(
        "flint_uptime_seconds",
        "Seconds since the node started.",
        "gauge",
        &[(String::new(), node.started.elapsed().as_secs_f64())],
    );
    if let Ok(sp) = e.space() {
        gauge(
            "flint_logical_bytes",
            "Sum of file sizes.",
            "gauge",
            &[(String::new(), sp.logical as f64)],
        );
        gauge(
            "flint_physical_bytes",
            "Chunk space in use, parity included.",
            "gauge",
            &[(String::new(), sp.physical as f64)],
        );
        gauge(
            "flint_capacity_bytes",
            "Chunk space in all.",
            "gauge",
            &[(String::new(), sp.capacity as f64)],
        );
        gauge(
            "flint_dedup_ratio",
            "Logical blocks per stored block.",
            "gauge",
            &[(String::new(), sp.dedup_ratio)],
        );
        gauge(
            "flint_compression_ratio",
            "Stored blocks' plain bytes per stored byte.",
            "gauge",
            &[(String::new(), sp.compression_ratio)],
        );
    }
    if let Ok(devs) = e.devices() {
        let l = |d: &crate::store::DeviceReport| format!("{{device=\"{}\"}}", d.name);
        gauge(
            "flint_device_healthy",
            "1 if the device is present and healthy.",
            "gauge",
            &devs
                .iter()
                .map(|d| (l(d), f64::from(u8::from(d.healthy))))
                .collect::<Vec<_>>(),
        );
        gauge(
            "flint_device_errors_total",
            "I/O errors seen on the device.",
            "counter",
            &devs
                .iter()
                .map(|d| (l(d), d.errors as f64))
                .collect::<Vec<_>>(),
        );
        gauge(
            "flint_device_free_bytes",
            "Free chunk space on the device.",
            "gauge",
            &devs
                .iter()
                .map(|d| (l(d), d.free as f64))
                .collect::<Vec<_>>(),
        );
    }
    let (mut lat, mut count, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for (op, s) in node.server.stats().snapshot() {
        for q in ["0.5", "0.99", "0.999"] {
            let v = s.latency.value_at_quantile(q.parse().unwrap_or(0.5)) as f64;
            lat.push((format!("{{op=\"{op}\",quantile=\"{q}\"}}"), v));
        }
        count.push((format!("{{op=\"{op}\"}}"), s.count as f64));
        bytes.push((format!("{{op=\"{op}\"}}"), s.bytes as f64));
    }
    gauge(
        "flint_op_latency_microseconds",
        "Request latency by operation.",
        "summary",
        &lat,
    );
    gauge(
        "flint_ops_total",
        "Requests by operation.",
        "counter",
        &count,
    );
    gauge(
        "flint_op_bytes_total",
        "Bytes read or written by operation.",
        "counter",
        &bytes,
    );
    let proto: Vec<(String, f64)> = node
        .server
        .counters()
        .snapshot()
        .into_iter()
        .map(|(k, v)| (format!("{{counter=\"{k}\"}}"), v as f64))
        .collect();
    gauge(
        "flint_protocol_total",
        "Data protocol counters (frames, sessions, drops by reason).",
        "counter",
        &proto,
    );
    let fs_names: std::collections::HashMap<u32, String> = e
        .fs_list()
        .map(|l| l.into_iter().map(|(f, _)| (f.id, f.name)).collect())
        .unwrap_or_default();
    let fs_name = |id: u32| fs_names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    if let Ok(snaps) = e.snapshot_list(None) {
        let l = |s: &crate::engine::SnapInfo| {
            format!("{{fs=\"{}\",snapshot=\"{}\"}}", fs_name(s.fs), s.name)
        };
        gauge(
            "flint_snapshot_bytes",
            "Logical bytes of the file system when the snapshot was taken.",
            "gauge",
            &snaps
                .iter()
                .map(|s| (l(s), s.bytes as f64))
                .collect::<Vec<_>>(),
        );
        gauge(
            "flint_snapshot_reclaimable_bytes",
            "Bytes deleting the snapshot alone would free.",
            "gauge",
            &snaps
                .iter()
                .map(|s| (l(s), s.reclaimable as f64))
                .collect::<Vec<_>>(),
        );
    }
    let quotas = e.quota_list(None);
    let l = |q: &crate::engine::QuotaInfo| {
        format!(
            "{{fs=\"{}\",path=\"{}\"}}",
            fs_name(q.quota.fs),
            q.quota.path.replace('\\', "\\\\").replace('"', "\\\"")
        )
    };
    let per = |f: &dyn Fn(&crate::engine::QuotaInfo) -> f64| {
        quotas.iter().map(|q| (l(q), f(q))).collect::<Vec<_>>()
    };
    gauge(
        "flint_quota_used_bytes",
        "Logical bytes under the quota's directory.",
        "gauge",
        &per(&|q| q.used as f64),
    );
    gauge(
        "flint_quota_hard_bytes",
        "The quota's hard limit (0: none).",
        "gauge",
        &per(&|q| q.quota.hard as f64),
    );
    gauge(
        "flint_quota_soft_bytes",
        "The quota's soft limit (0: none).",
        "gauge",
        &per(&|q| q.quota.soft as f64),
    );
    gauge(
        "flint_quota_in_grace",
        "1 while use is over the soft limit and the grace runs.",
        "gauge",
        &per(&|q| f64::from(u8::from(q.in_grace))),
    );
    gauge(
        "flint_quota_refused_total",
        "Writes the quota refused with EDQUOT since start.",
        "counter",
        &per(&|q| q.refused as f64),
    );
    if let (Ok(groups), Ok(list)) = (e.groups(), e.fs_list()) {
        let mut members = Vec::new();
        let mut used = Vec::new();
        for g in &groups {
            let mut n = 0;
            let mut bytes = 0;
            for (f, u) in &list {
                if e.fs_group(f.id)
                    .ok()
                    .flatten()
                    .is_some_and(|x| x.id == g.id)
                {
                    n += 1;
                    bytes += u;
                }
            }
            let label = format!("{{group=\"{}\"}}", g.name);
            members.push((label.clone(), f64::from(n)));
            used.push((label, bytes as f64));
        }
        gauge(
            "flint_group_filesystems",
            "File systems in the group.",
            "gauge",
            &members,
        );
        gauge(
            "flint_group_used_bytes",
            "Logical bytes of the group's file systems.",
            "gauge",
            &used,
        );
    }
    out
}
