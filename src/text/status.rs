//! The daemon's status for people (`coffer status`): whether it runs, what
//! it does now, when it runs next, and how its last run ended.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::engine::metrics::Status;

/// `daemon --metrics ADDR`: where the metrics are served.
pub fn metrics_served(addr: impl std::fmt::Display) -> String {
    format!("coffer daemon: metrics at http://{addr}/metrics\n")
}

/// `coffer worker` ended: what it did.
pub fn worker_ended(name: &str, s: &crate::engine::worker::WorkerSummary) -> String {
    format!(
        "worker {name}: {} actions done, {} failed, {} lost to another worker\n",
        s.done, s.failed, s.lost
    )
}

/// `coffer status`: the shared catalog, asked for the workers, failed.
pub fn fleet_unreadable(e: &anyhow::Error) -> String {
    format!("workers: the shared catalog cannot be read: {e:#}\n")
}

/// A second Ctrl-C ended the process once no snapshot was open.
pub fn aborted_by_second_interrupt() -> &'static str {
    "coffer: aborted by a second Ctrl-C; no snapshot is left open\n"
}

/// No daemon has written a status into `state_dir`.
pub fn no_daemon(state_dir: &Path) -> String {
    format!(
        "no daemon has run with the state directory {}\n",
        state_dir.display()
    )
}

/// A daemon's status, `running` or gone, with times in `zone`.
pub fn daemon_status(s: &Status, running: bool, zone: chrono_tz::Tz) -> String {
    let time = |t: DateTime<Utc>| {
        t.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    };
    let mut out = String::new();
    if running {
        let _ = writeln!(
            out,
            "daemon: running (pid {}, since {})",
            s.pid,
            s.started.map(time).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            out,
            "daemon: not running (pid {} is gone; last heard of {})",
            s.pid,
            s.updated.map(time).unwrap_or_default()
        );
    }
    if let Some(m) = &s.metrics {
        let _ = writeln!(out, "metrics: {m}");
    }
    let _ = match (&s.run, running) {
        (Some(run), true) => {
            let _ = writeln!(
                out,
                "now: run {run}, since {}; {} running, {} queued",
                s.run_started.map(time).unwrap_or_default(),
                s.running.len(),
                s.queued
            );
            for line in &s.running {
                let _ = writeln!(out, "  {line}");
            }
            Ok(())
        }
        (Some(run), false) => writeln!(
            out,
            "run {run} was in progress when the daemon stopped; the next apply recovers it"
        ),
        (None, true) => match s.next_run {
            Some(t) => writeln!(out, "now: sleeping; next run {}", time(t)),
            None => writeln!(out, "now: starting a run"),
        },
        (None, false) => Ok(()),
    };
    if let (Some(run), Some(t)) = (&s.last_run, s.last_run_finished) {
        let _ = writeln!(
            out,
            "last run: {run}, ended {}: {}",
            time(t),
            s.last_run_subject.as_deref().unwrap_or("")
        );
    }
    out
}

/// `status` with a shared catalog: the workers, when each was last seen,
/// and the actions they hold with the time their leases have left.
pub fn fleet(
    workers: &[crate::catalog::queue::WorkerRecord],
    claimed: &[crate::catalog::queue::Work],
) -> String {
    let mut out = String::new();
    if workers.is_empty() {
        out.push_str("workers: none has registered with the shared catalog\n");
    } else {
        let _ = writeln!(out, "workers:");
        for w in workers {
            let holds: Vec<String> = claimed
                .iter()
                .filter(|c| c.worker.as_deref() == Some(w.name.as_str()))
                .map(|c| {
                    let left = c.lease_left_ms.unwrap_or(0);
                    if left > 0 {
                        format!(
                            "{} (run {}, lease {}s left)",
                            c.what(),
                            c.run_id,
                            left / 1000
                        )
                    } else {
                        format!("{} (run {}, lease ran out)", c.what(), c.run_id)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "  {} on {} (pid {}): last seen {}s ago; {}",
                w.name,
                w.machine,
                w.pid,
                w.silent_seconds.max(0),
                if holds.is_empty() {
                    "idle".to_string()
                } else {
                    holds.join(", ")
                }
            );
        }
    }
    out
}
