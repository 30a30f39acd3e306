//! `coffer catalog …`: rebuild the catalog from a tier, refresh it from the
//! tiers and report drift, and show what it holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::terminal::Terminal;
use super::{EXIT_OK, Location, PolicyArgs, load_or_report};
use crate::catalog::{self, DriftKind, PointRecord};
use crate::engine;
use crate::policy::Config;

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
    /// Print the points as JSON.
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
        let doc = crate::json::CatalogSync {
            tiers: drifts.iter().map(Into::into).collect(),
        };
        writeln!(out, "{}", crate::json::render(&doc))?;
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
        let doc = crate::json::CatalogShow {
            vms: listed
                .iter()
                .map(|(vm, points)| crate::json::CatalogVm {
                    uuid: vm.uuid.clone(),
                    name: vm.name.clone(),
                    source: vm.source.clone(),
                    points: points
                        .iter()
                        .map(|p| {
                            let lifetime = catalog.snapshot_lifetime_of(&p.point_id).ok().flatten();
                            crate::json::CatalogPoint::new(p, lifetime)
                        })
                        .collect(),
                })
                .collect(),
            unreadable: unreadable
                .iter()
                .map(|(p, c)| crate::json::CatalogUnreadable {
                    point: p.point_id.clone(),
                    vm_uuid: p.vm_uuid.clone(),
                    tier: c.tier.clone(),
                    state: c.state.as_str().into(),
                    detail: c.detail.clone(),
                })
                .collect(),
        };
        writeln!(out, "{}", crate::json::render(&doc))?;
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
