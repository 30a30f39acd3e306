//! `coffer restore VM`: a point of a VM (the newest, one by id, or the
//! newest at a time) from a tier, to local files or onto a host as a new VM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::terminal::Terminal;
use super::{EXIT_OK, PolicyArgs, print};
use crate::engine::restore::{ToSource, find_point, restore_to_dir, restore_to_source};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::restore::{PlaceNames, VmxChanges};
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name (as recorded in its points).
    pub vm: String,
    #[command(flatten)]
    pub choice: PointChoice,
    /// Write the VMDKs and the .vmx into this directory.
    #[arg(
        long,
        short,
        required_unless_present = "to_source",
        conflicts_with_all = ["host", "datacenter", "folder", "pool"]
    )]
    pub out: Option<PathBuf>,
    /// Restore onto this source (an ESXi host, a vCenter, or the lab) as a
    /// new VM.
    #[arg(long, conflicts_with = "out")]
    pub to_source: Option<String>,
    #[command(flatten)]
    pub place: Place,
    /// Datastore for the restored VM's files (onto a host).
    #[arg(long, default_value = "datastore1")]
    pub datastore: String,
    /// Name of the restored VM (default: `<VM>-restored`).
    #[arg(long)]
    pub name: Option<String>,
    /// Power the restored VM on.
    #[arg(long)]
    pub power_on: bool,
    /// With --power-on: how long to wait for the guest's VMware Tools
    /// heartbeat, the time to which is recorded for the reports (`0s`:
    /// do not wait).
    #[arg(long, default_value = "5m", requires = "power_on")]
    pub heartbeat_timeout: String,
    /// Give the restored VM new UUIDs and MAC addresses (the host makes
    /// them at power-on); without it the VM keeps its identity and a
    /// power-on answers the host's "moved or copied?" with "moved".
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

/// Where on a vCenter a VM goes; each by name (a folder or pool by its
/// path, `apps/restored`) or managed object id.
#[derive(Debug, clap::Args)]
pub struct Place {
    /// On a vCenter: the host (default: the only one, of the datacenter).
    #[arg(long)]
    pub host: Option<String>,
    /// On a vCenter: the datacenter of the host (default: the host's).
    #[arg(long)]
    pub datacenter: Option<String>,
    /// On a vCenter: the VM folder, a path below the datacenter's VM
    /// folder (default: that folder).
    #[arg(long)]
    pub folder: Option<String>,
    /// The resource pool, a path below the host's root pool (default: the
    /// root pool).
    #[arg(long)]
    pub pool: Option<String>,
}

impl Place {
    pub fn names(&self) -> PlaceNames {
        PlaceNames {
            datacenter: self.datacenter.clone(),
            host: self.host.clone(),
            folder: self.folder.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// Which point of a VM: the newest, one by id, or the newest at a time,
/// from a tier or the first that holds one.
#[derive(Debug, clap::Args)]
pub struct PointChoice {
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
    /// The tier to read the point from (default: the first tier holding
    /// the VM, local tiers first).
    #[arg(long)]
    pub tier: Option<String>,
}

impl PointChoice {
    /// The chosen point of `vm`: its tier, repository and manifest.
    pub fn find(
        &self,
        config: &crate::policy::Config,
        vm: &str,
    ) -> Result<(String, Repository, Manifest)> {
        find_point(
            config,
            self.tier.as_deref(),
            vm,
            self.source.as_deref(),
            self.point.as_deref(),
            parse_at(self.at.as_deref())?,
        )
    }
}

/// Reads an `--at TIME` (RFC 3339).
pub fn parse_at(at: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    at.map(|t| {
        crate::policy::units::parse_time(t)
            .with_context(|| format!("--at {t}: expected RFC 3339, e.g. 2026-11-25T01:00:00Z"))
    })
    .transpose()
}

pub fn run(args: Args) -> Result<u8> {
    let config = args.policies.load()?;
    let (tier, tier_repo, m) = args.choice.find(&config, &args.vm)?;
    let changes = VmxChanges {
        name: (args.name.clone()).unwrap_or_else(|| format!("{}-restored", args.vm)),
        new_uuid: args.new_uuid,
        disconnect_network: args.disconnect_network,
        network: None,
    };
    let terminal = Terminal::human();
    let read = crate::engine::tiers::readable(
        &config,
        &tier,
        &tier_repo,
        &m,
        "restore",
        "run this restore again once they read (exit 5 until then)",
    )?;
    if let crate::engine::tiers::Readable::Waiting(why) = &read {
        print(format!("{why}\n"))?;
        return Ok(super::repo::EXIT_THAWING);
    }
    if let crate::engine::tiers::Readable::Staged(s) = &read {
        print(format!("{}\n", s.report.describe()))?;
    }
    let repo = read.repo(&tier_repo);
    print(text::reading_point("restoring", &m, &tier))?;
    // Disks the backup left out are not in the point: said before anything
    // is written, and the restored VM has no such disk.
    print(text::not_restored(&m))?;
    if let Some(dir) = &args.out {
        let only = (!args.disk.is_empty()).then_some(args.disk.as_slice());
        let r = restore_to_dir(repo, &m, dir, &changes, only, args.force, &terminal)?;
        print(text::restored_to_dir(&r))?;
        return Ok(EXIT_OK);
    }
    let source_name = args.to_source.as_deref().expect("clap requires one");
    // Ctrl-C gives the restore up cleanly: the import lease is aborted
    // and the host removes the half-imported VM.
    crate::engine::cancel::install_signal_handler();
    let to = ToSource {
        source: source_name,
        place: args.place.names(),
        datastore: &args.datastore,
        power_on: args.power_on,
        heartbeat_timeout: super::duration("--heartbeat-timeout", &args.heartbeat_timeout)?,
    };
    let r = restore_to_source(&config, repo, &tier, &m, &to, &changes, &terminal)?;
    print(text::restored_to_source(
        &changes.name,
        source_name,
        args.power_on,
        &r,
    ))?;
    Ok(EXIT_OK)
}
