//! The repository used directly (`repo …`): what each command reads or
//! changes, with the point chosen by its id and, where the answer reports a
//! speed, the time it took. Nothing here needs a host; only a tape tier's
//! points need the policies (to stage them from tape).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};

use super::threads;
use super::tiers::TapeTier;
use crate::repo::Repository;
use crate::repo::manifest::{DiskEntry, Manifest};
use crate::repo::ops::{self, CopyReport, Sample, VerifyReport};
use crate::repo::restore::{self, DiskFormat, RestoreStats};

/// What `repo ls` finds: the points whose manifest reads, those whose
/// manifest does not (with why), and object names refused as point names.
#[derive(Debug, Default)]
pub struct Listing {
    pub manifests: Vec<Manifest>,
    /// A point id and the error its manifest gave.
    pub unreadable: Vec<(String, String)>,
    pub refused: Vec<String>,
}

/// Every point of `repo`, with its manifest read.
pub fn list(repo: &Repository) -> Result<Listing> {
    let (points, refused) = repo.list_points_checked()?;
    let mut listing = Listing {
        refused,
        ..Listing::default()
    };
    for p in &points {
        match repo.read_manifest(p) {
            Ok(m) => listing.manifests.push(m),
            Err(e) => listing
                .unreadable
                .push((p.point_id.clone(), format!("{e:#}"))),
        }
    }
    Ok(listing)
}

/// Verifies every point, or only `point`, or one `sample` slice of the
/// chunks; answers the report and the seconds it took. The points of a
/// tape tier (`tape`) are proven through their staging copies.
pub fn verify(
    repo: &Repository,
    tape: Option<&TapeTier>,
    point: Option<&str>,
    sample: Option<Sample>,
) -> Result<(VerifyReport, f64)> {
    if let Some(t) = tape {
        return verify_tape(&t.config, &t.tier, repo, point, sample);
    }
    let only = point
        .map(|p| repo.find_point(p))
        .transpose()?
        .map(|p| vec![p]);
    let started = Instant::now();
    let report = ops::verify(repo, only.as_deref(), sample, threads())?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// Deletes the chunks no point references that are older than `grace`
/// (with `dry_run`, only says which). A tape tier then frees whole media
/// once nothing on them is kept: answers their labels.
pub fn gc(
    repo: &Repository,
    tape: Option<&TapeTier>,
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<(ops::GcReport, Option<Vec<String>>)> {
    let r = ops::gc(repo, grace, dry_run)?;
    let freed = match tape.filter(|_| !dry_run) {
        Some(t) => Some(super::tiers::free_tape_media(&t.config, &t.tier)?.unwrap_or_default()),
        None => None,
    };
    Ok((r, freed))
}

/// `verify` for a tape tier: each point (or only `point`) is staged from
/// tape and its staging copy proven, one point at a time; the reports add
/// up. A point whose staging fails is a bad point, with why.
fn verify_tape(
    config: &crate::policy::Config,
    tier: &str,
    repo: &Repository,
    point: Option<&str>,
    sample: Option<Sample>,
) -> Result<(VerifyReport, f64)> {
    let started = Instant::now();
    let points = match point {
        Some(p) => vec![repo.find_point(p)?],
        None => repo.list_points()?,
    };
    let mut total = VerifyReport::default();
    for p in &points {
        let staged = repo
            .read_manifest(p)
            .map_err(anyhow::Error::from)
            .and_then(|m| super::tiers::stage_from_tape(config, tier, repo, &m));
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                total.points += 1;
                total
                    .bad_points
                    .push((p.point_id.clone(), format!("{e:#}")));
                total.failed_points.insert(p.point_id.clone());
                continue;
            }
        };
        let r = ops::verify(
            &staged.repo,
            Some(std::slice::from_ref(p)),
            sample,
            threads(),
        )?;
        total.points += r.points;
        total.chunks_checked += r.chunks_checked;
        total.bytes_checked += r.bytes_checked;
        total.bad_chunks.extend(r.bad_chunks);
        total.bad_points.extend(r.bad_points);
        total.refused_keys.extend(r.refused_keys);
        total.failed_points.extend(r.failed_points);
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// Copies `point` from `from` to `to`, sending only missing chunks.
pub fn copy(from: &Repository, to: &Repository, point: &str) -> Result<CopyReport> {
    let p = from.find_point(point)?;
    Ok(ops::copy_point(from, to, &p, threads())?.1)
}

/// A disk restored from a point: which, how, in how long.
#[derive(Debug)]
pub struct RestoredDisk {
    pub disk: DiskEntry,
    pub stats: RestoreStats,
    pub seconds: f64,
}

/// The disk of a point's manifest with `device_key`, or its first disk.
pub fn choose_disk(m: &Manifest, device_key: Option<i32>) -> Result<&DiskEntry> {
    match device_key {
        Some(k) => m
            .disks
            .iter()
            .find(|d| d.device_key == k)
            .ok_or_else(|| anyhow!("point {} has no disk {k}", m.point_id)),
        None => m
            .disks
            .first()
            .ok_or_else(|| anyhow!("point {} has no disks", m.point_id)),
    }
}

/// Restores one disk of `point` (the one with `device_key`, else the
/// first) to `out` as `format`; `force` overwrites existing files.
pub fn restore_disk(
    repo: &Repository,
    point: &str,
    device_key: Option<i32>,
    out: &Path,
    format: DiskFormat,
    force: bool,
) -> Result<RestoredDisk> {
    let m = repo.read_manifest(&repo.find_point(point)?)?;
    let disk = choose_disk(&m, device_key)?;
    let started = Instant::now();
    let index = repo.read_index(&m, disk)?;
    let stats = restore::restore_disk(repo, &index, out, format, force, threads())?;
    Ok(RestoredDisk {
        disk: disk.clone(),
        stats,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Removes the locks whose holders are gone; answers them and how many
/// live locks remain.
pub fn unlock(repo: &Repository) -> Result<(Vec<String>, usize)> {
    let removed = repo.remove_stale_locks()?;
    let live = crate::repo::lock::list_locks(repo.store())?.len();
    Ok((removed, live))
}

/// Removes `point` (its chunks are left to gc).
/// `repo thaw`: asks for the point's chunks in archive storage to be
/// restored for `days` at `speed`, and says how far that is.
pub fn thaw(
    repo: &Repository,
    point: &str,
    days: u32,
    speed: crate::repo::store::ThawSpeed,
) -> Result<ops::ThawReport> {
    let m = repo.read_manifest(&repo.find_point(point)?)?;
    Ok(ops::thaw_point(repo, &m, days, speed, super::threads())?)
}

/// `repo migrate`: moves the chunk objects into packs of `pack_size`
/// (`policy::units::parse_pack_size` checks it).
pub fn migrate(repo: &Repository, pack_size: u64) -> Result<ops::MigrateReport> {
    Ok(ops::migrate_to_packs(repo, pack_size)?)
}

pub fn prune(repo: &Repository, point: &str) -> Result<()> {
    Ok(ops::prune_point(repo, &repo.find_point(point)?)?)
}
