//! Running fio as a baseline in the same invocation and reading its JSON.

use serde_json::Value;
use std::process::Command;

/// What fio measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FioResult {
    /// Total IOPS (reads + writes).
    pub iops: f64,
    /// Total bytes per second.
    pub bytes_per_sec: f64,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub lat_us: [f64; 4],
    /// CPU time per I/O in nanoseconds (user + system).
    pub cpu_ns_per_io: f64,
}

/// Whether fio is installed.
pub fn available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs fio with `args` (plus JSON output options) and parses the result.
pub fn run(args: &[String]) -> Result<FioResult, String> {
    let out = Command::new("fio")
        .args(args)
        .args([
            "--output-format=json",
            "--group_reporting",
            "--lat_percentiles=1",
            "--percentile_list=50:99:99.9",
        ])
        .output()
        .map_err(|e| format!("cannot run fio: {e} (install it: apt-get install fio)"))?;
    if !out.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON object.
    let start = text
        .find('{')
        .ok_or_else(|| "fio printed no JSON".to_string())?;
    let v: Value =
        serde_json::from_str(&text[start..]).map_err(|e| format!("fio JSON unreadable: {e}"))?;
    parse(&v)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn parse(v: &Value) -> Result<FioResult, String> {
    let job = &v["jobs"][0];
    if job.is_null() {
        return Err("fio JSON has no jobs".into());
    }
    let mut iops = 0.0;
    let mut bw = 0.0;
    let mut ios = 0.0;
    let mut lat = [0.0f64; 4];
    let mut weight = 0.0;
    for dir in ["read", "write"] {
        let d = &job[dir];
        let n = num(&d["total_ios"]);
        if n == 0.0 {
            continue;
        }
        iops += num(&d["iops"]);
        bw += num(&d["bw_bytes"]);
        ios += n;
        let p = &d["lat_ns"]["percentile"];
        let q = [
            num(&p["50.000000"]),
            num(&p["99.000000"]),
            num(&p["99.900000"]),
            num(&d["lat_ns"]["max"]),
        ];
        // Mixed jobs: weight each direction's percentiles by its share, and
        // take the larger maximum.
        for i in 0..3 {
            lat[i] += q[i] * n;
        }
        lat[3] = lat[3].max(q[3]);
        weight += n;
    }
    if weight > 0.0 {
        for l in lat.iter_mut().take(3) {
            *l /= weight;
        }
    }
    for l in lat.iter_mut() {
        *l /= 1000.0;
    }
    let runtime_s = num(&job["job_runtime"]) / 1000.0;
    let cpu = (num(&job["usr_cpu"]) + num(&job["sys_cpu"])) / 100.0 * runtime_s;
    Ok(FioResult {
        iops,
        bytes_per_sec: bw,
        lat_us: lat,
        cpu_ns_per_io: if ios > 0.0 { cpu * 1e9 / ios } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fio_json() {
        let v: Value = serde_json::from_str(
            r#"{"jobs":[{"job_runtime":2000,"usr_cpu":10.0,"sys_cpu":30.0,
            "read":{"total_ios":1000,"iops":500.0,"bw_bytes":2048000,
              "lat_ns":{"max":90000,"percentile":{"50.000000":1000,"99.000000":5000,"99.900000":8000}}},
            "write":{"total_ios":0}}]}"#,
        )
        .unwrap();
        let r = parse(&v).unwrap();
        assert_eq!(r.iops, 500.0);
        assert_eq!(r.lat_us, [1.0, 5.0, 8.0, 90.0]);
        assert!((r.cpu_ns_per_io - 800_000.0).abs() < 1e-6);
    }
}
