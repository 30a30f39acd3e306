//! `coffer catalog …`: rebuild the catalog from a tier, refresh it from the
//! tiers and report drift, and show what it holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::terminal::Terminal;
use super::{EXIT_OK, Location, PolicyArgs, load_or_report};
use crate::engine;
use crate::policy::Config;
use crate::text;

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
        let doc = crate::json::CatalogSync::new(&drifts);
        writeln!(out, "{}", crate::json::render(&doc))?;
        return Ok(EXIT_OK);
    }
    write!(out, "{}", text::catalog_synced(&drifts, rebuild, &path))?;
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
    let contents = engine::catalog::contents(&catalog, a.vm.as_deref())?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let lifetime = |p: &str| catalog.snapshot_lifetime_of(p).ok().flatten();
        let doc = crate::json::CatalogShow::new(&contents, lifetime);
        writeln!(out, "{}", crate::json::render(&doc))?;
        return Ok(EXIT_OK);
    }
    write!(out, "{}", text::catalog_contents(&contents))?;
    Ok(EXIT_OK)
}
