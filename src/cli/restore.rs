//! `coffer restore VM`: a point of a VM (the newest, one by id, or the
//! newest at a time) from a tier, to local files or onto a host as a new VM.

use std::path::PathBuf;

use anyhow::Result;

use super::terminal::Terminal;
use super::{EXIT_OK, PolicyArgs, print};
use crate::engine::restore::{PointChoice, ToSource, restore_to_dir, restore_to_source};
use crate::engine::tiers::{Readable, readable};
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
    #[arg(
        long,
        default_value = "5m",
        requires = "power_on",
        value_parser = crate::policy::units::parse_duration
    )]
    pub heartbeat_timeout: std::time::Duration,
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

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let (tier, tier_repo, m) = args.choice.find(&config, &args.vm)?;
    let changes = VmxChanges {
        name: (args.name.clone()).unwrap_or_else(|| format!("{}-restored", args.vm)),
        new_uuid: args.new_uuid,
        disconnect_network: args.disconnect_network,
        network: None,
    };
    let terminal = Terminal::human();
    let read = readable(
        &config,
        &tier,
        &tier_repo,
        &m,
        "restore",
        "run this restore again once they read (exit 5 until then)",
    )?;
    match &read {
        Readable::Waiting(why) => {
            print(format_args!("{why}\n"))?;
            return Ok(super::repo::EXIT_THAWING);
        }
        Readable::Staged(s) => print(format_args!("{}\n", s.report.describe()))?,
        Readable::Here => {}
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
        heartbeat_timeout: args.heartbeat_timeout,
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
