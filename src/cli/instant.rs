//! `coffer instant-recover`: boot a VM straight from a restore point, list
//! the sessions, move one to production storage, stop one.

use std::net::IpAddr;

use anyhow::{Result, anyhow};

use super::{EXIT_OK, PolicyArgs, print};
use crate::engine::instant::{self, StartArgs};
use crate::text;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The VM whose point to boot.
    pub vm: Option<String>,
    #[command(flatten)]
    pub choice: super::restore::PointChoice,
    /// The source (ESXi host) to run the VM on (default: the VM's own).
    #[arg(long)]
    pub to_source: Option<String>,
    #[command(flatten)]
    pub place: super::restore::Place,
    /// The recovered VM's name (default: VM-instant).
    #[arg(long)]
    pub name: Option<String>,
    /// This machine's address that the host reaches for NFS, ports 111
    /// and 2049 (default: 127.0.0.1 for the built-in lab).
    #[arg(long)]
    pub listen: Option<IpAddr>,
    /// Connect every network card to this port group.
    #[arg(long, conflicts_with = "disconnect_network")]
    pub network: Option<String>,
    /// Network cards start disconnected.
    #[arg(long)]
    pub disconnect_network: bool,
    /// New BIOS UUID and MAC addresses (the original still runs).
    #[arg(long)]
    pub new_uuid: bool,
    /// How long to wait for the guest's VMware Tools heartbeat.
    #[arg(long, default_value = "10m")]
    pub heartbeat_timeout: String,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The running sessions, with their overlay size.
    List {
        #[command(flatten)]
        policies: PolicyArgs,
    },
    /// Move the VM onto a datastore of its host (power off, copy the point
    /// plus its writes, register, power on) and end the session.
    Migrate {
        /// The session (the recovered VM's name).
        name: String,
        /// The production datastore.
        #[arg(long, default_value = "datastore1")]
        datastore: String,
        #[command(flatten)]
        policies: PolicyArgs,
    },
    /// Power off, unregister, unmount, stop serving, drop the overlay.
    Stop {
        /// The session (the recovered VM's name).
        name: String,
        #[command(flatten)]
        policies: PolicyArgs,
    },
    /// The NFS server of a session (started by `instant-recover VM`).
    #[command(hide = true)]
    Serve {
        /// The session's directory under the state directory.
        #[arg(long)]
        session_dir: std::path::PathBuf,
        #[command(flatten)]
        policies: PolicyArgs,
    },
}

pub fn run(args: Args) -> Result<u8> {
    match args.command {
        Some(Command::List { policies }) => {
            print(text::instant_sessions(&instant::list(&policies.load()?)?))?;
        }
        Some(Command::Migrate {
            name,
            datastore,
            policies,
        }) => {
            let migrated = instant::migrate(&policies.load()?, &name, &datastore)?;
            print(text::instant_migrated(&migrated))?;
        }
        Some(Command::Stop { name, policies }) => {
            print(text::instant_stopped(&instant::stop(
                &policies.load()?,
                &name,
            )?))?;
        }
        Some(Command::Serve {
            session_dir,
            policies,
        }) => instant::serve_session(&policies.load()?, &session_dir)?,
        None => {
            let vm = args
                .vm
                .ok_or_else(|| anyhow!("name the VM to recover (or list, stop NAME)"))?;
            let config = args.policies.load()?;
            let timeout = super::duration("--heartbeat-timeout", &args.heartbeat_timeout)?;
            let a = StartArgs {
                vm,
                at: super::restore::parse_at(args.choice.at.as_deref())?,
                source: args.choice.source,
                point: args.choice.point,
                tier: args.choice.tier,
                to_source: args.to_source,
                place: args.place.names(),
                name: args.name,
                address: args.listen,
                network: args.network,
                disconnect_network: args.disconnect_network,
                new_uuid: args.new_uuid,
                heartbeat_timeout: timeout,
                server_program: std::env::current_exe()?,
            };
            print(text::instant_started(&instant::start(
                &config,
                &args.policies.dir,
                &a,
            )?))?;
        }
    }
    Ok(EXIT_OK)
}
