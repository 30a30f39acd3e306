//! `coffer schedule explain`: the next fire times of a policy's schedule, in
//! its time zone, with DST changes marked.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{EXIT_ERROR, EXIT_OK, PolicyArgs, print};
use crate::text;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the next fire times of a policy's schedule.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The policy whose schedule to explain.
    pub policy_name: String,
    /// How many fire times to show.
    #[arg(short = 'n', default_value_t = 10)]
    pub count: usize,
    /// Start from this instant (RFC 3339, e.g. 2026-10-24T00:00:00Z) instead of now.
    #[arg(long, value_parser = crate::policy::units::parse_time_arg)]
    pub from: Option<DateTime<Utc>>,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    let Command::Explain(args) = command;
    let config = p.load()?;
    let Some(policy) = config.policies.get(&args.policy_name) else {
        eprintln!("error: {}", config.no_such_policy(&args.policy_name));
        return Ok(EXIT_ERROR);
    };
    let from = args.from.unwrap_or_else(Utc::now);
    print(text::schedule(
        policy,
        &policy.schedule.upcoming(from, args.count),
    ))?;
    Ok(EXIT_OK)
}
