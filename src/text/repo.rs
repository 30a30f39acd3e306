//! A repository used directly (`coffer repo …`, `coffer backup-image`):
//! what was created, checked, freed, copied, restored or removed.

use std::fmt::Write as _;

use crate::engine::tiers::TierInit;
use crate::repo::Repository;
use crate::repo::manifest::{DiskEntry, Manifest, PointKind};
use crate::repo::ops::{CopyReport, GcReport, VerifyReport};
use crate::repo::restore::RestoreStats;

/// A point's kind in one word: `full` or `incremental`.
pub fn kind_word(kind: PointKind) -> &'static str {
    match kind {
        PointKind::Full => "full",
        PointKind::Incremental => "incremental",
    }
}

fn encrypted_word(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted"
    } else {
        "not encrypted"
    }
}

/// `repo init`: the repository made.
pub fn repo_created(repo: &Repository, encrypted: bool) -> String {
    format!(
        "created repository {} ({}, format {})\n",
        repo.describe(),
        encrypted_word(encrypted),
        repo.config.version
    )
}

/// `repo init --all`: one line per tier, created or already there.
pub fn tiers_initialised(tiers: &[(String, TierInit)]) -> String {
    let mut out = String::new();
    for (name, done) in tiers {
        let _ = match done {
            TierInit::Created {
                describe,
                encrypted,
            } => writeln!(
                out,
                "tier `{name}`: created repository {describe} ({})",
                encrypted_word(*encrypted)
            ),
            TierInit::AlreadyThere { what } => writeln!(
                out,
                "tier `{name}`: {what} is already a repository; left as it is"
            ),
        };
    }
    out
}

/// `repo verify`: what was checked, every damage found, and the verdict.
pub fn verify_report(r: &VerifyReport, seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checked {} points, {} chunks, {} bytes in {seconds:.1}s",
        r.points, r.chunks_checked, r.bytes_checked,
    );
    for b in &r.bad_chunks {
        let _ = writeln!(
            out,
            "DAMAGED chunk {}: {}; used by points {}",
            b.digest.to_hex(),
            b.error,
            b.points.join(", ")
        );
    }
    for (p, why) in &r.bad_points {
        let _ = writeln!(out, "DAMAGED point {p}: {why}");
    }
    for key in &r.refused_keys {
        let _ = writeln!(
            out,
            "FOREIGN object {key:?}: a manifest under a name that is not a valid point (never read)"
        );
    }
    if r.ok() {
        let _ = writeln!(out, "verification passed");
    } else {
        let _ = writeln!(
            out,
            "verification FAILED: {} points affected",
            r.failed_points.len()
        );
    }
    out
}

/// `repo gc`: what was kept and what was deleted (or would be, on a dry run).
pub fn gc_report(r: &GcReport, dry_run: bool) -> String {
    let mut out = format!(
        "{}{} chunks referenced; deleted {} unreferenced chunks, {} incomplete objects, {} stale locks and {} empty directories, {} bytes freed; kept {} young unreferenced chunks{}\n",
        if dry_run { "dry run: " } else { "" },
        r.chunks_referenced,
        r.chunks_deleted,
        r.incomplete_deleted,
        r.stale_locks_removed,
        r.empty_dirs_removed,
        r.bytes_freed,
        r.chunks_kept_young,
        if r.chunks_locked > 0 {
            format!(" and {} still locked (immutable tier)", r.chunks_locked)
        } else {
            String::new()
        }
    );
    let packs = r.packs_deleted + r.packs_repacked + r.packs_locked + r.packs_unreadable;
    if packs > 0 {
        let _ = writeln!(
            out,
            "packs: {} deleted, {} repacked, {} still immutable, {} unreadable (kept; run `coffer repo verify`)",
            r.packs_deleted, r.packs_repacked, r.packs_locked, r.packs_unreadable
        );
    }
    out
}

/// `repo copy`: what a copy sent.
pub fn point_copied(point: &str, r: &CopyReport) -> String {
    format!(
        "copied point {point}: {} chunks sent ({} bytes), {} already there\n",
        r.chunks_sent, r.bytes_sent, r.chunks_present
    )
}

/// `repo restore`: one disk written, where, and how fast.
pub fn disk_restored(point: &str, disk: &DiskEntry, stats: &RestoreStats, seconds: f64) -> String {
    format!(
        "restored disk {} of point {point} ({} bytes, {} written) to {} in {:.2}s ({:.0} MiB/s)\n",
        disk.label,
        disk.size_bytes,
        stats.bytes_written,
        stats
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        seconds,
        disk.size_bytes as f64 / seconds.max(1e-9) / 1048576.0
    )
}

/// `repo unlock`: the stale locks removed, and how many live ones remain.
pub fn unlocked(removed: &[String], live: usize) -> String {
    let mut out = String::new();
    for r in removed {
        let _ = writeln!(out, "removed stale lock: {r}");
    }
    let _ = writeln!(
        out,
        "{} stale locks removed; {live} live locks remain",
        removed.len()
    );
    out
}

/// `repo prune`: the point removed.
/// `repo thaw`: how many of the point's objects read now, and what is
/// under way.
pub fn thaw_report(point: &str, r: &crate::repo::ops::ThawReport) -> String {
    if r.done() {
        return format!(
            "point {point}: all {} objects read now; restore, verify or copy it\n",
            r.objects
        );
    }
    format!(
        "point {point}: {} of {} objects read now, {} thaws asked for now, {} under way; \
         run `coffer repo thaw` again later (GLACIER: minutes with expedited, hours with standard or bulk)\n",
        r.ready, r.objects, r.requested, r.pending
    )
}

pub fn migrated(r: &crate::repo::ops::MigrateReport) -> String {
    let mut out = format!(
        "{} chunk objects moved into {} packs, {} deleted; the repository is format version 2 (packs)\n",
        r.chunks_packed, r.packs_written, r.objects_deleted
    );
    if r.objects_left > 0 {
        let _ = writeln!(
            out,
            "{} chunk objects left in place (still immutable, or damaged): run `coffer repo migrate` again once their lock has passed; `coffer repo verify` reports damaged ones",
            r.objects_left
        );
    }
    out
}

pub fn point_pruned(point: &str) -> String {
    format!("pruned point {point}; run `coffer repo gc` to free its chunks\n")
}

/// `repo ls`: a table of the points, the names refused and the points
/// whose manifest could not be read.
pub fn point_list(doc: &crate::json::RepoLs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<20} {:<11} {:<20} {:>12} {:>9}",
        "POINT", "VM", "KIND", "CREATED", "SIZE", "CHUNKS"
    );
    for key in &doc.refused {
        let _ = writeln!(out, "skipped {key:?}: not a valid point name (never read)");
    }
    for p in &doc.points {
        let _ = writeln!(
            out,
            "{:<26} {:<20} {:<11} {:<20} {:>12} {:>9}",
            p.point,
            p.vm,
            kind_word(p.kind),
            p.created,
            p.size_bytes,
            p.chunks
        );
    }
    for u in &doc.unreadable {
        let _ = writeln!(out, "{:<26} unreadable: {}", u.point, u.detail);
    }
    out
}

/// `backup-image`: the point written from an image file.
pub fn image_backed_up(m: &Manifest, name: &str, seconds: f64) -> String {
    let d = &m.disks[0];
    format!(
        "point {} ({:?}) of {}: {} bytes disk, {} bytes read, {} new chunks ({} bytes stored) in {:.2}s ({:.0} MiB/s of disk)\n",
        m.point_id,
        m.kind,
        name,
        d.size_bytes,
        d.bytes_read,
        d.chunks_new,
        d.bytes_stored_new,
        seconds,
        d.size_bytes as f64 / seconds.max(1e-9) / 1048576.0
    )
}

/// `coffer tape emulate`: the library made, and how a tier uses it.
pub fn tape_library_made(
    dir: &std::path::Path,
    slots: u32,
    barcodes: &[String],
    size: u64,
) -> String {
    format!(
        "emulated tape library in {}: {slots} slots, {} blank cartridges ({}) of {}\nuse it in a tier: backend = \"tape\", library = \"{}\"\n",
        dir.display(),
        barcodes.len(),
        barcodes.join(", "),
        crate::policy::units::format_size(size),
        dir.display()
    )
}

/// The media of a tape tier, one block per medium.
pub fn tape_media(tier: &str, media: &[crate::tape::tier::Medium]) -> String {
    use crate::policy::units::format_size;
    use std::fmt::Write;
    if media.is_empty() {
        return format!("tape tier `{tier}` has written no medium yet\n");
    }
    let mut out = String::new();
    for m in media {
        let _ = writeln!(
            out,
            "{}  pool {}  {}{}  {} in {} files, {} objects still kept{}",
            m.label,
            m.pool,
            m.state,
            m.location
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default(),
            format_size(m.bytes),
            m.files.len(),
            m.needed_objects,
            m.last_written
                .as_deref()
                .map(|w| format!(", last written {w}"))
                .unwrap_or_default()
        );
        for f in &m.files {
            let _ = writeln!(
                out,
                "  file {:>3}  {}  {} objects, {}  {}",
                f.file,
                f.written_at,
                f.objects,
                format_size(f.bytes),
                f.points.join(", ")
            );
        }
    }
    out
}

/// The tape media a gc freed for reuse.
pub fn media_freed(freed: &[String]) -> String {
    if freed.is_empty() {
        "no tape medium freed: every medium still holds something a kept point needs\n".into()
    } else {
        format!(
            "tape media freed for reuse (rewritten from their beginning when next taken): {}\n",
            freed.join(", ")
        )
    }
}

/// What `coffer tape scan` found.
pub fn tape_scanned(tier: &str, r: &crate::tape::tier::ScanReport) -> String {
    let mut out = format!(
        "tape tier `{tier}`: read {} media ({}), recorded {} session files holding {} points\n",
        r.media.len(),
        if r.media.is_empty() {
            "none".to_string()
        } else {
            r.media.join(", ")
        },
        r.files,
        r.points
    );
    for s in &r.skipped {
        out.push_str(&format!("  skipped {s}\n"));
    }
    out.push_str(&format!(
        "the catalog learns them with `coffer catalog rebuild --tier {tier}`\n"
    ));
    out
}
