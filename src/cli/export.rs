//! `coffer export VM`: a point of a VM (the newest, one by id, or the newest
//! at a time) from a tier, as an OVA or as streamOptimized VMDKs, for any
//! tool that imports those.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::engine::restore::find_point;
use crate::run::export::{self, ExportFormat};
use crate::text;

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
    /// The tier to export from (default: the first tier holding the VM,
    /// local tiers first).
    #[arg(long)]
    pub tier: Option<String>,
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
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.policies).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let at = super::restore::parse_at(args.at.as_deref())?;
    let (tier, repo, m) = find_point(
        &config,
        args.tier.as_deref(),
        &args.vm,
        args.source.as_deref(),
        args.point.as_deref(),
        at,
    )?;
    let threads = crate::engine::threads();
    let mut out = std::io::stdout().lock();
    write!(out, "{}", text::reading_point("exporting", &m, &tier))?;
    let r = match args.format {
        ExportFormat::Ova => export::export_ova(&repo, &m, &args.out, args.force, threads)?,
        ExportFormat::Vmdk => export::export_vmdk(&repo, &m, &args.out, args.force, threads)?,
    };
    write!(out, "{}", text::exported(&r))?;
    Ok(EXIT_OK)
}
