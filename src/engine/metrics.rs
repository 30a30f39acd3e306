//! What a running coffer tells monitoring: Prometheus metrics served over
//! HTTP (`coffer daemon --metrics ADDR`), and a status file in the state
//! directory that `coffer status` reads.
//!
//! [`Metrics`] is an [`Observer`]: it learns everything from the engine's
//! events (runs, actions, progress, the plan's compliance and inventory),
//! so it counts exactly what the reports say. It renders the Prometheus
//! text exposition format, version 0.0.4 (prometheus.io, "Exposition
//! formats"): `# HELP` and `# TYPE` before each family, counters ending in
//! `_total`, times as Unix seconds, label values escaped.
//! [`serve`] answers `GET /metrics` on a plain HTTP/1.1 listener.
//!
//! It must never change what a run does: an observer only listens, and a
//! status file that cannot be written is skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cancel::SNAPSHOTS_OPEN;
use super::observer::{Event, Observer};
use crate::plan::compliance::{Standing, VmCompliance};
use crate::plan::planner::Action;

/// Upper bounds (seconds) of the action duration histogram: a second to
/// half a day, as backups of small and large VMs take.
const DURATION_BUCKETS: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0,
];

/// The name of the status file in the state directory.
pub const STATUS_FILE: &str = "daemon-status.json";

/// What the daemon is doing, as `coffer status` reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub started: Option<DateTime<Utc>>,
    /// Where metrics are served, when they are.
    pub metrics: Option<String>,
    /// The run in progress, if one.
    pub run: Option<String>,
    pub run_started: Option<DateTime<Utc>>,
    /// The lines of the actions running now.
    pub running: Vec<String>,
    /// Actions of the plan not started yet.
    pub queued: usize,
    /// When the daemon runs next (while it sleeps).
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<String>,
    pub last_run_finished: Option<DateTime<Utc>>,
    pub last_run_subject: Option<String>,
    pub last_run_failed: Option<bool>,
    pub updated: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The last backup of a VM under a policy.
#[derive(Default)]
struct LastBackup {
    ok: bool,
    at: f64,
    last_success: Option<f64>,
}

#[derive(Default)]
struct State {
    status: Status,
    runs: BTreeMap<&'static str, u64>,
    /// By kind, result and worker ("" for this process's own).
    actions: BTreeMap<(&'static str, &'static str, String), u64>,
    /// By kind and worker.
    durations: BTreeMap<(&'static str, String), Histogram>,
    running: BTreeMap<&'static str, i64>,
    /// Running actions by their line, for the status.
    running_lines: Vec<String>,
    backups: BTreeMap<(String, String), LastBackup>,
    read_bytes: BTreeMap<String, u64>,
    stored_bytes: BTreeMap<String, u64>,
    reading_now: BTreeMap<String, u64>,
    /// (vm, policy) → standing, newest good point, copies.
    compliance: ComplianceMap,
    vm_snapshots: BTreeMap<String, usize>,
}

/// Metrics and status, kept from the engine's events.
pub struct Metrics {
    state: Mutex<State>,
    status_file: Option<PathBuf>,
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A label value as the exposition format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: its help, its type and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The labels `pairs` as the exposition format writes them; a `worker`
/// label with no value (an action this process carried out itself) is left
/// out, as Prometheus reads an empty label as an absent one.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| !(*k == "worker" && v.is_empty()))
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if inner.is_empty() {
        return String::new();
    }
    format!("{{{}}}", inner.join(","))
}

/// A VM's standing, when its newest good point was taken, its copies.
type VmStanding = (Standing, Option<f64>, u32);
type ComplianceMap = BTreeMap<(String, String), VmStanding>;

/// Each VM's standing, newest good point and copies, by VM and policy.
fn compliance_of(all: &[VmCompliance]) -> ComplianceMap {
    all.iter()
        .map(|c| {
            (
                (c.vm.clone(), c.policy.clone()),
                (c.standing, c.newest_good.map(unix), c.copies),
            )
        })
        .collect()
}

/// Whether an action carries work out (not alerts, waits, kept points).
fn carried_out(a: &Action) -> bool {
    a.identity().is_some()
}

impl Metrics {
    /// Metrics of this process; with `status_file`, the status is written
    /// there after every change.
    pub fn new(status_file: Option<PathBuf>) -> Metrics {
        let state = State {
            status: Status {
                pid: std::process::id(),
                started: Some(Utc::now()),
                ..Status::default()
            },
            ..State::default()
        };
        let m = Metrics {
            state: Mutex::new(state),
            status_file,
        };
        m.save(&m.lock());
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the status file (atomically: a reader never sees half).
    fn save(&self, state: &State) {
        let Some(path) = &self.status_file else {
            return;
        };
        let mut status = state.status.clone();
        status.running = state.running_lines.clone();
        status.updated = Some(Utc::now());
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&status)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        family(
            &mut out,
            "coffer_build_info",
            "gauge",
            "The coffer version and commit serving these metrics.",
            &[(
                labels(&[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("commit", env!("COFFER_COMMIT")),
                ]),
                1.0,
            )],
        );
        let in_run = s.status.run.is_some();
        family(
            &mut out,
            "coffer_run_in_progress",
            "gauge",
            "1 while a run (plan and apply) is in progress.",
            &[(String::new(), if in_run { 1.0 } else { 0.0 })],
        );
        family(
            &mut out,
            "coffer_runs_total",
            "counter",
            "Runs that ended, by result.",
            &["success", "failed", "cancelled"]
                .iter()
                .map(|r| {
                    (
                        labels(&[("result", r)]),
                        *s.runs.get(r).unwrap_or(&0) as f64,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut times = Vec::new();
        if let Some(t) = s.status.last_run_finished {
            times.push((String::new(), unix(t)));
        }
        family(
            &mut out,
            "coffer_last_run_end_timestamp_seconds",
            "gauge",
            "When the last run ended.",
            &times,
        );
        family(
            &mut out,
            "coffer_next_run_timestamp_seconds",
            "gauge",
            "When the daemon runs next (while it sleeps).",
            &s.status
                .next_run
                .map(|t| vec![(String::new(), unix(t))])
                .unwrap_or_default(),
        );
        family(
            &mut out,
            "coffer_queue_depth",
            "gauge",
            "Actions of the current plan not started yet.",
            &[(String::new(), s.status.queued as f64)],
        );
        family(
            &mut out,
            "coffer_actions_running",
            "gauge",
            "Actions running now, by kind.",
            &s.running
                .iter()
                .map(|(k, n)| (labels(&[("action", k)]), *n as f64))
                .collect::<Vec<_>>(),
        );
        family(
            &mut out,
            "coffer_actions_total",
            "counter",
            "Actions that ended, by kind, result and the worker that carried them out (none: this process).",
            &s.actions
                .iter()
                .map(|((k, r, w), n)| {
                    let l = labels(&[("action", k), ("result", r), ("worker", w)]);
                    (l, *n as f64)
                })
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            out,
            "# HELP coffer_action_duration_seconds How long actions took, by kind and worker."
        );
        let _ = writeln!(out, "# TYPE coffer_action_duration_seconds histogram");
        for ((k, w), h) in &s.durations {
            let name = "coffer_action_duration_seconds";
            let bounds = DURATION_BUCKETS.iter().map(|le| le.to_string());
            for (le, n) in bounds
                .chain(["+Inf".to_string()])
                .zip(h.buckets.iter().chain([&h.count]))
            {
                let l = labels(&[("action", k), ("worker", w), ("le", &le)]);
                let _ = writeln!(out, "{name}_bucket{l} {n}");
            }
            let l = labels(&[("action", k), ("worker", w)]);
            let _ = writeln!(out, "{name}_sum{l} {}", h.sum);
            let _ = writeln!(out, "{name}_count{l} {}", h.count);
        }
        let by_vm_policy = |f: &dyn Fn(&LastBackup) -> Option<f64>| -> Vec<(String, f64)> {
            s.backups
                .iter()
                .filter_map(|((vm, policy), b)| {
                    Some((labels(&[("vm", vm), ("policy", policy)]), f(b)?))
                })
                .collect()
        };
        family(
            &mut out,
            "coffer_backup_last_success_timestamp_seconds",
            "gauge",
            "When the last successful backup of the VM under the policy ended.",
            &by_vm_policy(&|b| b.last_success),
        );
        family(
            &mut out,
            "coffer_backup_last_result",
            "gauge",
            "1 when the last backup of the VM under the policy succeeded, 0 when it failed.",
            &by_vm_policy(&|b| Some(if b.ok { 1.0 } else { 0.0 })),
        );
        family(
            &mut out,
            "coffer_backup_last_attempt_timestamp_seconds",
            "gauge",
            "When the last backup attempt of the VM under the policy ended.",
            &by_vm_policy(&|b| Some(b.at)),
        );
        let by_vm = |m: &BTreeMap<String, u64>| -> Vec<(String, f64)> {
            m.iter()
                .map(|(vm, n)| (labels(&[("vm", vm)]), *n as f64))
                .collect()
        };
        family(
            &mut out,
            "coffer_backup_read_bytes_total",
            "counter",
            "Bytes backups read from the hosts, by VM.",
            &by_vm(&s.read_bytes),
        );
        family(
            &mut out,
            "coffer_backup_stored_bytes_total",
            "counter",
            "Bytes backups stored as new chunks, by VM.",
            &by_vm(&s.stored_bytes),
        );
        family(
            &mut out,
            "coffer_backup_reading_bytes",
            "gauge",
            "Bytes read so far by each backup running now.",
            &by_vm(&s.reading_now),
        );
        family(
            &mut out,
            "coffer_snapshots_open",
            "gauge",
            "Snapshots coffer has open right now (one per backup reading).",
            &[(String::new(), SNAPSHOTS_OPEN.load(Ordering::SeqCst) as f64)],
        );
        family(
            &mut out,
            "coffer_vm_snapshots",
            "gauge",
            "Snapshots on the VM when the sources were last read (any owner).",
            &s.vm_snapshots
                .iter()
                .map(|(vm, n)| (labels(&[("vm", vm)]), *n as f64))
                .collect::<Vec<_>>(),
        );
        let comp = |f: &dyn Fn(&VmStanding) -> Option<f64>| {
            s.compliance
                .iter()
                .filter_map(|((vm, policy), c)| {
                    Some((labels(&[("vm", vm), ("policy", policy)]), f(c)?))
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut out,
            "coffer_vm_compliant",
            "gauge",
            "1 when the VM meets its policy (3-2-1-1-0 and RPO), 0 on a breach or when its source could not be read.",
            &comp(&|c| Some(if c.0 == Standing::Ok { 1.0 } else { 0.0 })),
        );
        family(
            &mut out,
            "coffer_vm_copies",
            "gauge",
            "Copies of the VM's newest good point, counting production.",
            &comp(&|c| Some(c.2 as f64)),
        );
        family(
            &mut out,
            "coffer_vm_newest_good_point_timestamp_seconds",
            "gauge",
            "When the VM's newest good point was taken.",
            &comp(&|c| c.1),
        );
        out
    }

    /// The status as the status file holds it.
    pub fn status(&self) -> Status {
        let s = self.lock();
        let mut status = s.status.clone();
        status.running = s.running_lines.clone();
        status
    }
}

impl Observer for Metrics {
    fn wants_progress(&self) -> bool {
        true
    }

    fn event(&self, event: &Event<'_>) {
        let mut s = self.lock();
        match event {
            Event::RunStarted { run_id } => {
                s.status.run = Some(run_id.to_string());
                s.status.run_started = Some(Utc::now());
                s.status.next_run = None;
            }
            Event::Planned { plan, gathered } => {
                s.status.queued = plan.actions.iter().filter(|a| carried_out(a)).count();
                s.compliance = compliance_of(&plan.compliance);
                s.vm_snapshots = gathered
                    .inventory
                    .iter()
                    .map(|(_, vm)| (vm.name.clone(), vm.all_snapshots().len()))
                    .collect();
            }
            Event::ActionStarted { action } => {
                s.status.queued = s.status.queued.saturating_sub(1);
                *s.running.entry(action.kind()).or_default() += 1;
                s.running_lines.push(action.line());
            }
            Event::Progress { running } => {
                s.reading_now = running
                    .iter()
                    .map(|p| (p.vm.clone(), p.bytes_read))
                    .collect();
            }
            Event::ActionFinished { outcome } => {
                let Some(action) = &outcome.planned else {
                    return;
                };
                let kind = action.kind();
                if let Some(n) = s.running.get_mut(kind) {
                    *n -= 1;
                }
                if let Some(i) = s.running_lines.iter().position(|l| *l == outcome.action) {
                    s.running_lines.remove(i);
                }
                let result = if outcome.ok { "success" } else { "failed" };
                let worker = outcome.worker.clone().unwrap_or_default();
                *s.actions.entry((kind, result, worker.clone())).or_default() += 1;
                let h = s.durations.entry((kind, worker)).or_default();
                for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                    if outcome.seconds <= *le {
                        h.buckets[i] += 1;
                    }
                }
                h.count += 1;
                h.sum += outcome.seconds;
                if let (Action::Backup { vm, policy, .. }, now) = (action, unix(Utc::now())) {
                    s.reading_now.remove(vm);
                    let b = s.backups.entry((vm.clone(), policy.clone())).or_default();
                    b.ok = outcome.ok;
                    b.at = now;
                    if outcome.ok {
                        b.last_success = Some(now);
                    }
                    if let Some(bytes) = outcome.bytes {
                        *s.read_bytes.entry(vm.clone()).or_default() += bytes.read;
                        *s.stored_bytes.entry(vm.clone()).or_default() += bytes.stored;
                    }
                }
            }
            Event::RunFinished {
                run_id,
                subject,
                failed,
                cancelled,
                compliance,
                ..
            } => {
                s.compliance = compliance_of(compliance);
                let result = if *cancelled {
                    "cancelled"
                } else if *failed {
                    "failed"
                } else {
                    "success"
                };
                *s.runs.entry(result).or_default() += 1;
                s.status.run = None;
                s.status.run_started = None;
                s.status.queued = 0;
                s.running.clear();
                s.running_lines.clear();
                s.reading_now.clear();
                s.status.last_run = Some(run_id.to_string());
                s.status.last_run_finished = Some(Utc::now());
                s.status.last_run_subject = Some(subject.to_string());
                s.status.last_run_failed = Some(*failed || *cancelled);
            }
            Event::DaemonSleeping { until } => s.status.next_run = Some(*until),
            Event::DaemonApplying { .. } => s.status.next_run = None,
            _ => return,
        }
        self.save(&s);
    }
}

/// Two observers hearing the same events (a terminal and the metrics).
pub struct Both<'a>(pub &'a dyn Observer, pub &'a dyn Observer);

impl Observer for Both<'_> {
    fn event(&self, event: &Event<'_>) {
        for o in [self.0, self.1] {
            if matches!(event, Event::Progress { .. } | Event::ProgressEnded) && !o.wants_progress()
            {
                continue;
            }
            o.event(event);
        }
    }

    fn wants_progress(&self) -> bool {
        self.0.wants_progress() || self.1.wants_progress()
    }
}

/// The daemon's metrics: its status kept in `state_dir`, and with
/// `listen` served over HTTP (answers where, a port of 0 picks one).
pub fn for_daemon(
    state_dir: &Path,
    listen: Option<&str>,
) -> Result<(Arc<Metrics>, Option<SocketAddr>)> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let metrics = Arc::new(Metrics::new(Some(state_dir.join(STATUS_FILE))));
    let Some(addr) = listen else {
        return Ok((metrics, None));
    };
    let bound = serve(addr, metrics.clone())?;
    {
        let mut s = metrics.lock();
        s.status.metrics = Some(format!("http://{bound}/metrics"));
        metrics.save(&s);
    }
    Ok((metrics, Some(bound)))
}

/// Serves the metrics at `http://ADDR/metrics` from a thread of its own;
/// answers the address it listens on (a port of 0 picks a free one).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("listening for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &metrics);
            }
        })?;
    Ok(bound)
}

/// One HTTP/1.1 exchange (RFC 9112): the request line and headers are
/// read, the answer is sent with its length, and the connection closed.
fn answer(conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers up to the empty line; a request has no body we need.
    let mut seen = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        seen += line.len();
        if seen > 64 * 1024 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">coffer metrics</a></body></html>\n".to_string(),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

/// The daemon's status in `state_dir`, if a daemon ever wrote one.
pub fn read_status(state_dir: &Path) -> Result<Option<Status>> {
    let path = state_dir.join(STATUS_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether the process that wrote a status is still alive.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::observer::Outcome;

    fn backup(vm: &str) -> Action {
        serde_json::from_value(serde_json::json!({
            "action": "backup", "policy": "p", "vm": vm, "vm_uuid": vm, "source": "vc",
            "tier": "local", "full": true, "base": null, "consistency": "crash",
            "reason": "due"
        }))
        .unwrap()
    }

    /// Actions this process carried out are counted without a worker
    /// label; a worker's (a coordinator's outcome, or a worker's own) under
    /// its name, in their own series.
    #[test]
    fn actions_carry_the_worker_that_did_them() {
        let m = Metrics::new(None);
        for (vm, worker) in [("a", None), ("b", Some("w1")), ("c", Some("w1"))] {
            let outcome = Outcome::of(
                &backup(vm),
                2.0,
                Ok("done".into()),
                None,
                worker.map(String::from),
            );
            m.event(&Event::ActionFinished { outcome: &outcome });
        }
        let text = m.render();
        for line in [
            r#"coffer_actions_total{action="backup",result="success"} 1"#,
            r#"coffer_actions_total{action="backup",result="success",worker="w1"} 2"#,
            r#"coffer_action_duration_seconds_bucket{action="backup",le="10"} 1"#,
            r#"coffer_action_duration_seconds_count{action="backup",worker="w1"} 2"#,
            r#"coffer_action_duration_seconds_bucket{action="backup",worker="w1",le="+Inf"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
