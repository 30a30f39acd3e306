//! `coffer retention simulate`: which of a list of timestamps a tier's
//! retention keeps, and by which rule — the way to check a retention change
//! before committing it.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

use super::{EXIT_OK, Output, PolicyArgs};
use crate::plan::retention;
use crate::policy::model::Retention;
use crate::text;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Apply a retention to timestamps (one RFC 3339 time per line, from a
    /// file or standard input) and print what is kept, by which rule.
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// File of timestamps ("-" or absent: standard input).
    pub file: Option<PathBuf>,
    /// Take the rules of this policy's retention on --tier.
    #[arg(long, requires = "tier")]
    pub policy: Option<String>,
    /// With --policy: the tier whose retention to use.
    #[arg(long, requires = "policy")]
    pub tier: Option<String>,
    // Or the rules themselves, as restic's `forget` takes them.
    #[command(flatten)]
    pub rules: Retention,
    /// Time zone of the buckets (default: the policy's, else UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    let Command::Simulate(a) = command;
    let (rules, mut tz) = match (&a.policy, &a.tier) {
        (Some(policy), Some(t)) => p.load()?.retention_of(policy, t).map_err(|e| anyhow!(e))?,
        _ if a.rules == Retention::default() => {
            bail!("give --policy and --tier, or at least one rule (--last, --daily, …)")
        }
        _ => (a.rules, chrono_tz::UTC),
    };
    if let Some(z) = &a.timezone {
        tz = z
            .parse()
            .map_err(|_| anyhow!("--timezone `{z}` is not an IANA time zone"))?;
    }
    let times = match a.file.as_ref().filter(|f| f.as_os_str() != "-") {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => std::io::read_to_string(std::io::stdin())?,
    };
    let verdicts = retention::apply(&retention::parse_times(&times)?, &rules, tz);
    let doc = || crate::json::Retention::new(&verdicts);
    a.output.print(doc, || text::retention(&verdicts, tz))?;
    Ok(EXIT_OK)
}
