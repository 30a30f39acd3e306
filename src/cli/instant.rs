//! `coffer instant-recover`: boot a VM straight from a restore point, list
//! the sessions, move one to production storage, stop one.

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
    pub start: StartArgs,
    #[command(flatten)]
    pub place: super::restore::Place,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The running sessions, with their overlay size.
    List,
    /// Move the VM onto a datastore of its host (power off, copy the point
    /// plus its writes, register, power on) and end the session.
    Migrate {
        /// The session (the recovered VM's name).
        name: String,
        /// The production datastore.
        #[arg(long, default_value = "datastore1")]
        datastore: String,
    },
    /// Power off, unregister, unmount, stop serving, drop the overlay.
    Stop {
        /// The session (the recovered VM's name).
        name: String,
    },
    /// The NFS server of a session (started by `instant-recover VM`).
    #[command(hide = true)]
    Serve {
        /// The session's directory under the state directory.
        #[arg(long)]
        session_dir: std::path::PathBuf,
    },
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    match args.command {
        Some(Command::List) => print(text::instant_sessions(&instant::list(&config)?))?,
        Some(Command::Migrate { name, datastore }) => {
            let migrated = instant::migrate(&config, &name, &datastore)?;
            print(text::instant_migrated(&migrated))?;
        }
        Some(Command::Stop { name }) => {
            print(text::instant_stopped(&instant::stop(&config, &name)?))?;
        }
        Some(Command::Serve { session_dir }) => instant::serve_session(&config, &session_dir)?,
        None => {
            let a = StartArgs {
                vm: (args.vm)
                    .ok_or_else(|| anyhow!("name the VM to recover (or list, stop NAME)"))?,
                place: args.place.names(),
                server_program: std::env::current_exe()?,
                ..args.start
            };
            print(text::instant_started(&instant::start(&config, &p.dir, &a)?))?;
        }
    }
    Ok(EXIT_OK)
}
