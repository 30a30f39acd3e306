//! `coffer export VM`: a point of a VM (the newest, one by id, or the newest
//! at a time) from a tier, as an OVA or as streamOptimized VMDKs, for any
//! tool that imports those.

use std::path::PathBuf;

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, print};
use crate::run::export::{self, ExportFormat};
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name (as recorded in its points).
    pub vm: String,
    #[command(flatten)]
    pub choice: crate::engine::restore::PointChoice,
    /// `ova`: one OVF package; `vmdk`: the first disk to FILE, disk N to
    /// `<stem>_N.vmdk` beside it.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let (tier, repo, m) = args.choice.find(&config, &args.vm)?;
    let threads = crate::engine::threads();
    print(text::reading_point("exporting", &m, &tier))?;
    let r = match args.format {
        ExportFormat::Ova => export::export_ova(&repo, &m, &args.out, args.force, threads)?,
        ExportFormat::Vmdk => export::export_vmdk(&repo, &m, &args.out, args.force, threads)?,
    };
    print(text::exported(&r))?;
    Ok(EXIT_OK)
}
