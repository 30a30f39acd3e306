//! `coffer compliance`: each VM's 3-2-1-1-0 and RPO standing, from a fresh
//! refresh of the catalog and the sources; exit 3 when any VM breaches.

use std::io::Write;

use anyhow::Result;
use chrono::Utc;

use super::Location;
use super::terminal::Terminal;
use super::{EXIT_OK, load_or_report};
use crate::engine::Workspace;
use crate::engine::report::{standing_word, vm_label};

/// Exit code when a VM is out of compliance.
pub const EXIT_BREACH: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Print the standing as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let terminal = Terminal::human();
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let (gathered, plan) = ws.compliance(Utc::now())?;
    let config = &ws.config;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = crate::json::Compliance {
            now: plan.now,
            notes: gathered.notes.clone(),
            vms: plan.compliance.clone(),
            drills: gathered.drill_runs.iter().map(Into::into).collect(),
        };
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        for n in &gathered.notes {
            writeln!(out, "note: {n}")?;
        }
        let c = &config.compliance;
        writeln!(
            out,
            "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}  {:<23} STANDING",
            "VM",
            "POLICY",
            "COPIES",
            "MEDIA",
            "OFFSITE",
            "IMMUTABLE",
            "DATA ERR",
            "GUEST",
            "NEWEST GOOD"
        )?;
        writeln!(
            out,
            "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}",
            "(required)", "", c.copies, c.media, c.offsite, c.immutable, c.verify_errors, 0
        )?;
        for v in &plan.compliance {
            writeln!(
                out,
                "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}  {:<23} {}",
                vm_label(v, &plan.compliance),
                v.policy,
                v.copies,
                v.media,
                v.offsite,
                v.immutable,
                v.verify_errors,
                v.guest_check_failures,
                v.newest_good.map_or("none".to_string(), |t| {
                    crate::engine::report::local_time(config, t)
                }),
                if v.violations.is_empty() {
                    "ok".to_string()
                } else {
                    format!("{}: {}", standing_word(v), v.violations.join("; "))
                }
            )?;
            if let Some(d) = gathered.last_drill(&v.vm_uuid, config.settings.timezone) {
                writeln!(out, "{:<24} {d}", "")?;
            }
        }
    }
    Ok(
        if plan.compliance.iter().any(|v| !v.violations.is_empty()) {
            EXIT_BREACH
        } else {
            EXIT_OK
        },
    )
}
