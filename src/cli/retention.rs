//! `coffer retention simulate`: which of a list of timestamps a tier's
//! retention keeps, and by which rule — the way to check a retention change
//! before committing it.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::plan::retention::{self, PointTime};
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
    /// Or give the rules here (restic's `forget` rules).
    #[arg(long)]
    pub last: Option<u32>,
    /// Keep the newest point of each of the last N hours.
    #[arg(long)]
    pub hourly: Option<u32>,
    /// Keep the newest point of each of the last N days.
    #[arg(long)]
    pub daily: Option<u32>,
    /// Keep the newest point of each of the last N weeks.
    #[arg(long)]
    pub weekly: Option<u32>,
    /// Keep the newest point of each of the last N months.
    #[arg(long)]
    pub monthly: Option<u32>,
    /// Keep the newest point of each of the last N years.
    #[arg(long)]
    pub yearly: Option<u32>,
    /// Keep everything within this long of the newest point, e.g. 14d.
    #[arg(long)]
    pub within: Option<String>,
    /// Time zone of the buckets (default: the policy's, else UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Print the verdicts as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(command: Command) -> Result<u8> {
    let Command::Simulate(a) = command;
    let (rules, mut tz) = match (&a.policy, &a.tier) {
        (Some(p), Some(t)) => {
            let config = load_or_report(&a.policies).map_err(|_| crate::cli::InvalidPolicyDir)?;
            let policy = config
                .policies
                .get(p)
                .ok_or_else(|| anyhow!("{}", config.no_such_policy(p)))?;
            let rules = policy
                .retain
                .get(t)
                .cloned()
                .ok_or_else(|| anyhow!("policy `{p}` has no retention for tier `{t}`"))?;
            (rules, policy.timezone())
        }
        _ => {
            let rules = Retention {
                last: a.last,
                hourly: a.hourly,
                daily: a.daily,
                weekly: a.weekly,
                monthly: a.monthly,
                yearly: a.yearly,
                within: a
                    .within
                    .as_deref()
                    .map(crate::policy::units::parse_duration)
                    .transpose()
                    .map_err(|e| anyhow!("--within: {e}"))?,
            };
            if rules == Retention::default() {
                bail!("give --policy and --tier, or at least one rule (--last, --daily, …)");
            }
            (rules, chrono_tz::UTC)
        }
    };
    if let Some(z) = &a.timezone {
        tz = z
            .parse()
            .map_err(|_| anyhow!("--timezone `{z}` is not an IANA time zone"))?;
    }
    let mut text = String::new();
    match a.file.as_ref().filter(|f| f.as_os_str() != "-") {
        Some(f) => {
            text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let t = DateTime::parse_from_rfc3339(line)
            .with_context(|| format!("line {}: `{line}` is not an RFC 3339 time", n + 1))?
            .with_timezone(&Utc);
        points.push(PointTime {
            id: line.to_string(),
            created: t,
        });
    }
    let verdicts = retention::apply(&points, &rules, tz);
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = crate::json::Retention::new(&verdicts);
        writeln!(out, "{}", crate::json::render(&doc))?;
        return Ok(EXIT_OK);
    }
    write!(out, "{}", text::retention(&verdicts, tz))?;
    Ok(EXIT_OK)
}
