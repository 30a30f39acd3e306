//! `coffer restore VM`: a point of a VM (the newest, one by id, or the
//! newest at a time) from a tier, to local files or onto a host as a new VM.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use super::catalog::open_tier;
use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::policy::Config;
use crate::policy::model::TierBackend;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::connect;
use crate::run::restore::{self, HostTarget, VmxChanges};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name (as recorded in its points).
    pub vm: String,
    /// The source the VM was backed up from, when VMs of this name were
    /// backed up from more than one.
    #[arg(long)]
    pub source: Option<String>,
    /// This point.
    #[arg(long, conflicts_with = "at")]
    pub point: Option<String>,
    /// The newest point at or before this time (RFC 3339).
    #[arg(long)]
    pub at: Option<String>,
    /// The tier to restore from (default: the first tier holding the VM,
    /// local tiers first).
    #[arg(long)]
    pub tier: Option<String>,
    /// Write the VMDKs and the .vmx into this directory.
    #[arg(long, short, required_unless_present = "to_source")]
    pub out: Option<PathBuf>,
    /// Restore onto this source (an ESXi host or the lab) as a new VM.
    #[arg(long, conflicts_with = "out")]
    pub to_source: Option<String>,
    /// Datastore for the restored VM's files (onto a host).
    #[arg(long, default_value = "datastore1")]
    pub datastore: String,
    /// Name of the restored VM (default: `<VM>-restored`).
    #[arg(long)]
    pub name: Option<String>,
    /// Power the restored VM on.
    #[arg(long)]
    pub power_on: bool,
    /// Give the restored VM new UUIDs.
    #[arg(long)]
    pub new_uuid: bool,
    /// Restore with its network cards disconnected.
    #[arg(long)]
    pub disconnect_network: bool,
    /// Only this disk (device key), to local files.
    #[arg(long)]
    pub disk: Vec<i32>,
    /// Overwrite existing local files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

/// Reads an `--at TIME` (RFC 3339).
pub fn parse_at(at: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    at.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .with_context(|| format!("--at {t}: expected RFC 3339, e.g. 2026-11-25T01:00:00Z"))
    })
    .transpose()
}

/// The point to restore: by id, the newest at a time, or the newest, of
/// the VM `vm` of `source`. VMs of one name on two sources are two VMs:
/// without `source`, a name recorded from more than one source is refused
/// rather than one of them guessed (points recorded without a source match
/// any).
pub fn find_point(
    config: &Config,
    tier: Option<&str>,
    vm: &str,
    source: Option<&str>,
    point: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<(String, Repository, Manifest)> {
    let mut tiers: Vec<&str> = match tier {
        Some(t) => vec![t],
        None => config.tiers.keys().map(String::as_str).collect(),
    };
    tiers.sort_by_key(|t| !matches!(config.tiers[*t].backend, TierBackend::Local { .. }));
    for t in tiers {
        let repo = open_tier(config, t)?;
        let mut best: Option<Manifest> = None;
        let mut sources = std::collections::BTreeSet::new();
        for p in repo.list_points()? {
            if point.is_some_and(|id| id != p.point_id) {
                continue;
            }
            let Ok(m) = repo.read_manifest(&p) else {
                continue;
            };
            if m.vm.name != vm
                || source.is_some_and(|s| m.vm.source.as_deref().is_some_and(|own| own != s))
            {
                continue;
            }
            if let Some(own) = m.vm.source.as_deref() {
                sources.insert(own.to_string());
            }
            if let Some(at) = at {
                let created = DateTime::parse_from_rfc3339(&m.created)
                    .map(|c| c.with_timezone(&Utc))
                    .unwrap_or(at);
                if created > at {
                    continue;
                }
            }
            if best.as_ref().is_none_or(|b| m.point_id > b.point_id) {
                best = Some(m);
            }
        }
        if source.is_none() && sources.len() > 1 {
            bail!(
                "VMs named `{vm}` were backed up from sources {}: name one with --source",
                sources
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(m) = best {
            return Ok((t.to_string(), repo, m));
        }
    }
    bail!(
        "no point of VM `{vm}`{} on {}",
        point.map(|p| format!(" with id {p}")).unwrap_or_default(),
        tier.map_or("any tier".to_string(), |t| format!("tier `{t}`"))
    )
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.policies).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let at = parse_at(args.at.as_deref())?;
    let (tier, repo, m) = find_point(
        &config,
        args.tier.as_deref(),
        &args.vm,
        args.source.as_deref(),
        args.point.as_deref(),
        at,
    )?;
    let changes = VmxChanges {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-restored", args.vm)),
        new_uuid: args.new_uuid,
        disconnect_network: args.disconnect_network,
    };
    let threads = super::threads();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "restoring point {} of {} ({}, {} disks) from tier `{tier}`",
        m.point_id,
        m.vm.name,
        m.created,
        m.disks.len()
    )?;
    if let Some(dir) = &args.out {
        let only = (!args.disk.is_empty()).then_some(args.disk.as_slice());
        let r = restore::restore_local(&repo, &m, dir, &changes, only, args.force, threads)?;
        for f in &r.files {
            writeln!(out, "  wrote {}", f.display())?;
        }
        writeln!(
            out,
            "restored {} of disks in {:.2}s",
            crate::policy::units::format_size(r.bytes),
            r.seconds
        )?;
        return Ok(EXIT_OK);
    }
    let source_name = args.to_source.as_deref().expect("clap requires one");
    let source = config
        .sources
        .get(source_name)
        .ok_or_else(|| anyhow!("no source named `{source_name}`"))?;
    let conn = connect::connect(source, &config.settings.state_dir)?;
    if conn.session.service_content().about.is_vcenter() {
        bail!(
            "restore onto a vCenter is not supported yet; restore onto an ESXi host (or to files)"
        );
    }
    let scratch = tempfile::tempdir_in(&config.settings.state_dir)
        .or_else(|_| tempfile::tempdir())
        .context("a scratch directory for the restored files")?;
    let target = HostTarget::esxi(&conn, &args.datastore);
    let r = restore::restore_to_host(
        &repo,
        &m,
        &target,
        &changes,
        args.power_on,
        scratch.path(),
        threads,
    )?;
    writeln!(
        out,
        "registered VM `{}` ({}) on source `{source_name}`{}; uploaded {} in {:.2}s",
        changes.name,
        r.vm.value,
        if args.power_on { ", powered on" } else { "" },
        crate::policy::units::format_size(r.bytes_uploaded),
        r.seconds
    )?;
    Ok(EXIT_OK)
}
