//! A VM's points moved for people: one backup taken (`coffer backup`),
//! a point restored (`coffer restore`) or exported (`coffer export`).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::kind_word;
use crate::engine::backup_now::BackupTaken;
use crate::plan::cbt::CbtVerdict;
use crate::policy::units::format_size;
use crate::repo::manifest::Manifest;
use crate::run::export::Export;
use crate::run::restore::{HostRestore, LocalRestore};

/// A backup taken: warnings, leftover snapshots, the result line, one line
/// per disk (with change ids when `verbose`), skipped disks and notes.
/// Times are shown in `zone`.
pub fn backup_taken(taken: &BackupTaken, zone: chrono_tz::Tz, verbose: bool) -> String {
    let BackupTaken {
        vm, tier, outcome, ..
    } = taken;
    let m = &outcome.manifest;
    let mut out = String::new();
    for d in outcome
        .disks
        .iter()
        .filter(|d| d.read_from.starts_with("vCenter"))
    {
        let _ = writeln!(
            out,
            "warning: disk {} read through {}",
            d.device_key, d.read_from
        );
    }
    for l in &outcome.leftovers_removed {
        let _ = writeln!(out, "removed snapshot {}: {}", l.name, l.why);
    }
    for l in &outcome.leftovers_kept {
        let _ = writeln!(out, "left snapshot {} alone: {}", l.name, l.why);
    }
    let _ = writeln!(
        out,
        "VM {}: {} point {} on tier `{tier}` ({}-consistent{}) in {:.1}s, {}",
        vm,
        kind_word(m.kind),
        m.point_id,
        outcome.consistency,
        outcome
            .quiesce_fallback
            .as_ref()
            .map(|w| format!("; quiescing failed: {w}"))
            .or_else(|| outcome
                .consistency_alert
                .as_ref()
                .map(|a| format!("; alert: {a}")))
            .unwrap_or_default(),
        m.duration_ms as f64 / 1000.0,
        outcome.snapshot_lifetime.describe_in(zone)
    );
    for (d, e) in outcome.disks.iter().zip(&m.disks) {
        let how = match &d.verdict {
            // Change ids are for whoever debugs change tracking (`-v`).
            CbtVerdict::Incremental { since } if verbose => {
                format!("incremental, changed since change id {since}")
            }
            CbtVerdict::Incremental { .. } => {
                "incremental, what changed since the last point".to_string()
            }
            CbtVerdict::Full { reason } => format!("full ({reason})"),
        };
        let changed = d
            .bytes_changed
            .filter(|c| *c > 0)
            .map(|c| {
                format!(
                    ", {:.2}× the changed bytes",
                    d.bytes_fetched as f64 / c as f64
                )
            })
            .unwrap_or_default();
        let busy = match d.busy_answers {
            0 => String::new(),
            n => format!("; the host was busy (503) {n} times and coffer slowed down"),
        };
        let _ = writeln!(
            out,
            "  {} ({}): {how}; read {} in {} requests{changed}{busy}",
            d.label,
            format_size(e.size_bytes),
            format_size(d.bytes_fetched),
            d.requests
        );
    }
    for d in &m.skipped_disks {
        let _ = writeln!(out, "  skipped: {}", d.reason);
    }
    for n in &outcome.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(out, "snapshot {} removed", outcome.snapshot);
    out
}

/// A backup stopped by Ctrl-C.
pub fn backup_cancelled(vm: &str) -> String {
    format!(
        "coffer: backup of {vm} cancelled; its snapshot was removed and no point was recorded\n"
    )
}

/// What a restore or an export (`doing`: `restoring`, `exporting`) is
/// about to read: the point, its VM, when it was made, from which tier.
pub fn reading_point(doing: &str, m: &Manifest, tier: &str) -> String {
    format!(
        "{doing} point {} of {} ({}, {} disks) from tier `{tier}`\n",
        m.point_id,
        m.vm.name,
        m.created,
        m.disks.len()
    )
}

/// The disks a backup left out, said before a restore writes anything:
/// the restored VM has no such disk.
pub fn not_restored(m: &Manifest) -> String {
    let mut out = String::new();
    for d in &m.skipped_disks {
        let _ = writeln!(
            out,
            "  not restored: device {}: {}; the point does not hold it, and the restored VM has no such disk",
            d.device_key, d.reason
        );
    }
    out
}

/// `  wrote FILE`, one line per file written.
fn files_written(files: &[PathBuf]) -> String {
    let mut out = String::new();
    for f in files {
        let _ = writeln!(out, "  wrote {}", f.display());
    }
    out
}

/// A restore to local files: each file written and the total.
pub fn restored_to_dir(r: &LocalRestore) -> String {
    format!(
        "{}restored {} of disks in {:.2}s\n",
        files_written(&r.files),
        format_size(r.bytes),
        r.seconds
    )
}

/// A restore onto a host: the VM registered, and what was uploaded.
pub fn restored_to_source(name: &str, source: &str, power_on: bool, r: &HostRestore) -> String {
    format!(
        "registered VM `{name}` ({}) on source `{source}`{}{}; uploaded {} for {} of disks in {:.2}s\n",
        r.vm.value,
        if r.imported {
            " through the host's OVF import"
        } else {
            ""
        },
        if power_on { ", powered on" } else { "" },
        format_size(r.bytes_uploaded),
        format_size(r.disk_bytes),
        r.seconds
    ) + &match (r.heartbeat_seconds, &r.heartbeat_note) {
        (Some(h), _) => format!("first heartbeat after {h:.2}s\n"),
        (None, Some(why)) => format!("{why}\n"),
        (None, None) => String::new(),
    }
}

/// An export: each file written and the total.
pub fn exported(r: &Export) -> String {
    format!(
        "{}exported {} of disks as {} in {:.2}s\n",
        files_written(&r.files),
        format_size(r.disk_bytes),
        format_size(r.bytes_written),
        r.seconds
    )
}
