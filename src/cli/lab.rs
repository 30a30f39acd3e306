//! `coffer lab`: run the built-in ESXi simulator (`serve`) and write to a
//! lab VM's disks as its guest would (`write`), so a quickstart has
//! something to back up and an incremental has something to find.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;

use super::{EXIT_OK, Output, print};
use crate::lab::{Lab, LabConfig, NewDisk};
use crate::text;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the lab on 127.0.0.1 until interrupted (Ctrl-C); prints its URL,
    /// certificate thumbprint, user and password.
    Serve(ServeArgs),
    /// Write scattered 64 KiB blocks over a share of a lab VM's disks.
    Write(WriteArgs),
    /// Add a VM with disks of the sizes given (thin, a third of each filled
    /// with file-like data) or made from raw disk images, e.g. a multi-GiB
    /// one for a benchmark.
    AddVm(AddVmArgs),
    /// Read a file of an NFS v3 export sequentially with the lab host's
    /// NFS client (mounted through the portmapper), and say how fast.
    NfsRead {
        /// The NFS server's address.
        host: String,
        /// The export (`/coffer-NAME`).
        export: String,
        /// The file, relative to the export.
        file: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddVmArgs {
    /// The new VM's name.
    pub name: String,
    /// One disk, in order: a size (`4GiB`: thin, a third filled with
    /// file-like data), or `image=FILE[,size=SIZE]`: the content of the raw
    /// disk image FILE, copied sparsely (holes and zero blocks stay holes),
    /// on a disk of the image's size rounded up to a MiB, or SIZE when
    /// larger.
    #[arg(
        long = "disk",
        required = true,
        value_name = "SIZE|image=FILE[,size=SIZE]"
    )]
    pub disks: Vec<String>,
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct StateArg {
    /// The lab's state directory [default: $XDG_STATE_HOME/coffer/lab or ~/.local/state/coffer/lab].
    #[arg(long = "state", env = "COFFER_LAB_STATE")]
    pub dir: Option<PathBuf>,
}

impl StateArg {
    fn resolve(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(crate::lab::default_state_dir)
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Lab VMs to have (created if missing, never removed).
    #[arg(long, default_value_t = 2)]
    pub vms: u32,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Answer as a vCenter with two datacenters and an ESXi host in each,
    /// the VMs spread over them.
    #[arg(long)]
    pub vcenter: bool,
}

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// The VM (`lab-vm-01`).
    pub vm: String,
    /// Share of each disk's data area to overwrite, in percent.
    #[arg(long)]
    pub percent: f64,
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Serve(args) => serve(args),
        Command::Write(args) => write(args),
        Command::NfsRead { host, export, file } => {
            let started = std::time::Instant::now();
            let bytes = crate::instant::client::Nas::mount(&host, &export)?.read_through(&file)?;
            print(text::nfs_read(bytes, started.elapsed().as_secs_f64()))?;
            Ok(EXIT_OK)
        }
        Command::AddVm(args) => {
            let dir = args.state.resolve();
            let disks = (args.disks.iter())
                .map(|d| d.parse().map_err(|e| anyhow!("--disk {e}")))
                .collect::<Result<Vec<NewDisk>>>()?;
            let made = crate::lab::add_vm_with(&dir, &args.name, &disks)?;
            print(text::lab_vm_added(&args.name, &made, &disks, &dir))?;
            Ok(EXIT_OK)
        }
    }
}

fn serve(args: ServeArgs) -> Result<u8> {
    let dir = args.state.resolve();
    let mut config = LabConfig::new(&dir);
    config.vms = args.vms;
    config.port = args.port;
    config.vcenter = args.vcenter;
    let lab = Lab::start(config)
        .with_context(|| format!("starting the lab with state in {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", text::lab_serving(&lab, &dir))?;
    out.flush()?;
    drop(out);
    // Serve until the process is interrupted; the state is saved after
    // every operation, so an interruption loses nothing.
    loop {
        std::thread::park();
    }
}

fn write(args: WriteArgs) -> Result<u8> {
    let dir = args.state.resolve();
    if !(0.0..=100.0).contains(&args.percent) {
        bail!("--percent must be between 0 and 100, not {}", args.percent);
    }
    let written = crate::lab::write(&dir, &args.vm, args.percent)
        .with_context(|| format!("writing to {} in the lab at {}", args.vm, dir.display()))?;
    let doc = || crate::json::LabWrite::new(&args.vm, &written);
    args.output
        .print(doc, || text::lab_written(&args.vm, &written))?;
    Ok(EXIT_OK)
}
