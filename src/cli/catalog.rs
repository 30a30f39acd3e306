//! `coffer catalog …`: rebuild the catalog from a tier, refresh it from the
//! tiers and report drift, and show what it holds.

use anyhow::Result;

use super::terminal::Terminal;
use super::{EXIT_OK, Location, Output, PolicyArgs};
use crate::engine;
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
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Only these tiers (default: every tier of the policy directory).
    #[arg(long)]
    pub tier: Vec<String>,
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Only the VM with this name.
    #[arg(long)]
    pub vm: Option<String>,
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    match command {
        Command::Rebuild(a) => sync(&a.tier, &a.location, p, &a.output, true),
        Command::Refresh(a) => sync(&a.tier, &a.location, p, &a.output, false),
        Command::Show(a) => show(a, p),
    }
}

fn sync(
    tiers: &[String],
    location: &Location,
    p: &PolicyArgs,
    output: &Output,
    rebuild: bool,
) -> Result<u8> {
    let config = p.load()?;
    let at = engine::catalog::catalog_location(location.state.as_deref(), &config);
    let terminal = Terminal::human();
    let mut catalog = engine::catalog::open_catalog(&at, None, &terminal)?;
    let drifts = engine::catalog::sync_tiers(&config, &mut catalog, tiers, rebuild)?;
    let doc = || crate::json::CatalogSync::new(&drifts);
    output.print(doc, || text::catalog_synced(&drifts, rebuild, &at))?;
    Ok(EXIT_OK)
}

fn show(a: ShowArgs, p: &PolicyArgs) -> Result<u8> {
    // `--state DIR` needs no policies.
    let at = match &a.location.state {
        Some(dir) => engine::catalog::catalog_in(dir),
        None => p.load()?.settings.catalog,
    };
    let catalog = engine::catalog::open_existing(&at, &Terminal::human())?;
    let contents = engine::catalog::contents(&catalog, a.vm.as_deref())?;
    let doc = || {
        let lifetime = |p: &str| catalog.snapshot_lifetime_of(p).ok().flatten();
        crate::json::CatalogShow::new(&contents, lifetime)
    };
    a.output.print(doc, || text::catalog_contents(&contents))?;
    Ok(EXIT_OK)
}
