//! `coffer catalog …`: rebuild the catalog from a tier, refresh it from the
//! tiers and report drift, and show what it holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;

use super::terminal::Terminal;
use super::{EXIT_OK, Location, PolicyArgs, load_or_report};
use crate::catalog::{self, Drift, DriftKind, PointRecord};
use crate::engine;
use crate::policy::Config;

/// Version of the `--json` output formats of this file.
const JSON_FORMAT: u32 = 1;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Forget what the catalog knew of a tier and read it again from the
    /// tier's repository.
    Rebuild(RebuildArgs),
    /// Read the tiers' listings and manifests and report drift: copies gone
    /// missing, points never seen, unreadable manifests.
    Refresh(RefreshArgs),
    /// Points per VM and where their copies are.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// The tier of the policy directory to rebuild from.
    #[arg(long, required = true)]
    pub tier: Vec<String>,
    #[command(flatten)]
    pub location: Location,
    /// Print the drift as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Only these tiers (default: every tier of the policy directory).
    #[arg(long)]
    pub tier: Vec<String>,
    #[command(flatten)]
    pub location: Location,
    /// Print the drift as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Only the VM with this name.
    #[arg(long)]
    pub vm: Option<String>,
    #[command(flatten)]
    pub location: Location,
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Rebuild(a) => sync(&a.tier, &a.location, a.json, true),
        Command::Refresh(a) => sync(&a.tier, &a.location, a.json, false),
        Command::Show(a) => show(a),
    }
}

fn load(policy: &PolicyArgs) -> Result<Config> {
    load_or_report(policy).map_err(|_| crate::cli::InvalidPolicyDir.into())
}

/// Where the catalog is: `--state DIR`, else the policy's settings.
fn catalog_path(location: &Location) -> Result<PathBuf> {
    match &location.state {
        Some(dir) => Ok(engine::catalog::catalog_in(dir)),
        None => Ok(load(&location.policy)?.settings.catalog),
    }
}

fn sync(tiers: &[String], location: &Location, json: bool, rebuild: bool) -> Result<u8> {
    let config = load(&location.policy)?;
    let path = engine::catalog::catalog_path(location.state.as_deref(), &config);
    let terminal = Terminal::human();
    let mut catalog = engine::catalog::open_catalog(&path, None, &terminal)?;
    let drifts = engine::catalog::sync_tiers(&config, &mut catalog, tiers, rebuild)?;
    let mut out = std::io::stdout().lock();
    if json {
        let tiers: Vec<_> = drifts.iter().map(drift_json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "format": JSON_FORMAT, "tiers": tiers }))?
        )?;
        return Ok(EXIT_OK);
    }
    for d in &drifts {
        writeln!(
            out,
            "tier `{}`: {} points listed; {} never seen, {} appeared, {} missing, {} corrupt",
            d.tier,
            d.listed,
            d.never_seen().len(),
            d.appeared().len(),
            d.missing().len(),
            d.corrupt().len()
        )?;
        // After a rebuild every point is new to the tier: only problems
        // are worth a line each.
        for item in d.items.iter().filter(|i| {
            !rebuild || matches!(i.kind, DriftKind::Missing | DriftKind::Corrupt { .. })
        }) {
            writeln!(out, "  {item}")?;
        }
    }
    writeln!(out, "catalog: {}", path.display())?;
    Ok(EXIT_OK)
}

fn drift_json(d: &Drift) -> serde_json::Value {
    let items: Vec<_> = d
        .items
        .iter()
        .map(|i| {
            let (kind, reason) = match &i.kind {
                DriftKind::Missing => ("missing", None),
                DriftKind::NeverSeen => ("never-seen", None),
                DriftKind::Appeared => ("appeared", None),
                DriftKind::Corrupt { reason } => ("corrupt", Some(reason.as_str())),
            };
            json!({
                "point": i.point.point_id,
                "vm_uuid": i.point.vm_uuid,
                "kind": kind,
                "reason": reason,
            })
        })
        .collect();
    json!({ "tier": d.tier, "listed": d.listed, "drift": items })
}

fn show(a: ShowArgs) -> Result<u8> {
    let path = catalog_path(&a.location)?;
    if !path.exists() {
        bail!(
            "there is no catalog at {}; build one with `coffer catalog rebuild --tier NAME`",
            path.display()
        );
    }
    let catalog = engine::catalog::open_catalog(&path, None, &Terminal::human())?;
    let engine::catalog::Contents { listed, unreadable } =
        engine::catalog::contents(&catalog, a.vm.as_deref())?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let vms: Vec<_> = listed
            .iter()
            .map(|(vm, points)| {
                json!({
                    "uuid": vm.uuid,
                    "name": vm.name,
                    "source": vm.source,
                    "points": points
                        .iter()
                        .map(|p| point_json(p, catalog.snapshot_lifetime_of(&p.point_id).ok().flatten()))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let unreadable: Vec<_> = unreadable
            .iter()
            .map(|(p, c)| {
                json!({
                    "point": p.point_id, "vm_uuid": p.vm_uuid, "tier": c.tier,
                    "state": c.state.as_str(), "detail": c.detail,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "format": JSON_FORMAT,
                "vms": vms,
                "unreadable": unreadable,
            }))?
        )?;
        return Ok(EXIT_OK);
    }
    for (vm, points) in &listed {
        writeln!(out, "{} ({}): {} points", vm.name, vm.uuid, points.len())?;
        for p in points {
            writeln!(
                out,
                "  {:<26} {:<20} {:<11} {}",
                p.point_id,
                p.created.format("%Y-%m-%d %H:%M:%SZ"),
                kind_text(p),
                copies_text(p)
            )?;
        }
    }
    for (p, c) in &unreadable {
        writeln!(
            out,
            "unreadable: point {} of VM {} on tier `{}`: {}",
            p.point_id,
            p.vm_uuid,
            c.tier,
            c.detail.as_deref().unwrap_or(c.state.as_str())
        )?;
    }
    Ok(EXIT_OK)
}

fn kind_text(p: &PointRecord) -> &'static str {
    match p.kind {
        crate::repo::manifest::PointKind::Full => "full",
        crate::repo::manifest::PointKind::Incremental => "incremental",
    }
}

/// `local, offsite (missing)`: where the copies are.
fn copies_text(p: &PointRecord) -> String {
    if p.copies.is_empty() {
        return "no copies".into();
    }
    p.copies
        .iter()
        .map(|c| match c.state {
            catalog::CopyState::Present => c.tier.clone(),
            state => format!("{} ({})", c.tier, state.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A point as `catalog show --json` prints it; `snapshot`: when the
/// snapshot it was read from was created and removed, when this catalog
/// recorded the backup.
fn point_json(
    p: &PointRecord,
    snapshot: Option<catalog::SnapshotLifetimeRecord>,
) -> serde_json::Value {
    json!({
        "snapshot": snapshot.map(|s| json!({
            "name": s.snapshot,
            "created": catalog::time_text(s.created),
            "removed": catalog::time_text(s.removed),
            "open_ms": (s.removed - s.created).num_milliseconds(),
        })),
        "point": p.point_id,
        "created": catalog::time_text(p.created),
        "kind": kind_text(p),
        "parent": p.parent,
        "consistency": p.consistency,
        "duration_ms": p.duration_ms,
        "disks": p.disks.iter().map(|d| json!({
            "device_key": d.device_key, "label": d.label, "size_bytes": d.size_bytes,
            "chunk_size_bytes": d.chunk_size_bytes, "index_sha256": d.index_sha256,
            "change_id": d.change_id,
        })).collect::<Vec<_>>(),
        "copies": p.copies.iter().map(|c| json!({
            "tier": c.tier, "state": c.state.as_str(), "detail": c.detail,
            "locked_until": c.locked_until.map(catalog::time_text),
        })).collect::<Vec<_>>(),
    })
}
