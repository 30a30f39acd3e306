//! `coffer report`: the compliance report on demand (rendered from a fresh
//! refresh, written under the report directory, optionally mailed), or the
//! newest run report.

use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;

use super::catalog::{Location, catalog_path, open_catalog};
use super::plan::{Gathered, gather, make_plan};
use super::{EXIT_OK, load_or_report};
use crate::plan::planner::{Action, Plan};
use crate::policy::Config;
use crate::report::mail::{self, Mail, Retry};
use crate::report::model::{ActionLine, ComplianceReport, Required, RunReport, TierLine, VmLine};
use crate::report::render::Renderer;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// The compliance report (default: the newest run report).
    #[arg(long)]
    pub compliance: bool,
    /// Mail it through every notifier.
    #[arg(long)]
    pub send: bool,
}

/// The run report of `apply`, rendered: what each action came to, then
/// each VM's standing.
pub fn run_mail(
    config: &Config,
    run_id: &str,
    plan: &Plan,
    gathered: &Gathered,
    outcomes: &[super::apply::Outcome],
    cancelled: bool,
) -> Result<Mail> {
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let breaches = plan
        .compliance
        .iter()
        .filter(|c| !c.violations.is_empty())
        .count();
    let status = if cancelled {
        "cancelled"
    } else if failed == 0 {
        "success"
    } else if failed == outcomes.len() {
        "failed"
    } else {
        "partial"
    };
    let subject = format!(
        "coffer: run {run_id} {status} ({} actions, {failed} failed{})",
        outcomes.len(),
        if breaches == 0 {
            String::new()
        } else {
            format!(", {breaches} VMs out of compliance")
        }
    );
    let model = RunReport {
        run_id: run_id.to_string(),
        subject: subject.clone(),
        status: status.to_string(),
        failed: failed > 0,
        actions: outcomes
            .iter()
            .map(|o| ActionLine {
                ok: o.ok,
                action: o.action.clone(),
                detail: o.detail.clone(),
                seconds: format!("{:.1}", o.seconds),
            })
            .collect(),
        compliance: super::report::vm_lines(plan, gathered),
    };
    Renderer::new(&config.dir)
        .and_then(|r| r.render("run", &subject, &model))
        .map_err(|e| anyhow!(e))
}

/// Each VM's standing, for the reports.
pub fn vm_lines(plan: &Plan, g: &Gathered) -> Vec<VmLine> {
    plan.compliance
        .iter()
        .map(|c| VmLine {
            vm: super::plan::vm_label(c, &plan.compliance),
            policy: c.policy.clone(),
            ok: c.violations.is_empty(),
            standing: super::plan::standing_word(c).to_string(),
            violations: c.violations.clone(),
            copies: c.copies,
            media: c.media,
            offsite: c.offsite,
            immutable: c.immutable,
            verify_errors: c.verify_errors,
            guest_check_failures: c.guest_check_failures,
            newest_good: c
                .newest_good
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
            rpo: c
                .rpo_met
                .map(|m| if m { "met" } else { "breached" }.to_string()),
            last_drill: g.last_drill(&c.vm_uuid),
        })
        .collect()
}

/// The compliance report of a plan, rendered; its subject says the count.
pub fn compliance_mail(config: &Config, plan: &Plan, g: &Gathered) -> Result<Mail> {
    let vms = vm_lines(plan, g);
    let total = vms.len();
    let ok_count = vms.iter().filter(|v| v.ok).count();
    let pct = |n: usize| (n * 100).checked_div(total).unwrap_or(0) as u32;
    let mut tiers = Vec::new();
    for name in config.tiers.keys() {
        // One listing of the tier: what its objects take.
        let stored = super::catalog::open_tier(config, name)
            .ok()
            .and_then(|r| {
                let chunks = r.store().list("chunks/").ok()?;
                let points = r.store().list("points/").ok()?;
                Some(
                    chunks
                        .iter()
                        .chain(&points)
                        .map(|o| o.size_bytes)
                        .sum::<u64>(),
                )
            })
            .map_or("?".to_string(), crate::policy::units::format_size);
        tiers.push(TierLine {
            name: name.clone(),
            stored,
            points: g
                .points
                .iter()
                .filter(|p| p.copies.contains_key(name))
                .count(),
            error: g
                .unlisted
                .contains(name)
                .then(|| "its listing failed".to_string()),
        });
    }
    let model = ComplianceReport {
        generated: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        total,
        ok_count,
        breach_count: total - ok_count,
        ok_percent: pct(ok_count),
        breach_percent: pct(total - ok_count),
        required: Required {
            copies: config.compliance.copies,
            media: config.compliance.media,
            offsite: config.compliance.offsite,
            immutable: config.compliance.immutable,
        },
        vms,
        alerts: plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Alert { vm, message } => Some(match vm {
                    Some(vm) => format!("{vm}: {message}"),
                    None => message.clone(),
                }),
                _ => None,
            })
            .collect(),
        tiers,
        policy_changes: policy_changes(config),
    };
    let subject = format!(
        "coffer compliance: {} of {total} VMs meet their policy",
        model.ok_count
    );
    Renderer::new(&config.dir)
        .and_then(|r| r.render("compliance", &subject, &model))
        .map_err(|e| anyhow!(e))
}

/// Commits to the policy directory since the newest compliance report on
/// disk (all of the last 30 days before the first), when it is in git.
fn policy_changes(config: &Config) -> Vec<String> {
    let since = std::fs::read_dir(&config.settings.report_dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("compliance-"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .map(chrono::DateTime::<Utc>::from)
        .unwrap_or_else(|| Utc::now() - chrono::Duration::days(30));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&config.dir)
        .args([
            "log",
            &format!("--since={}", since.to_rfc3339()),
            "--date=short",
            "--format=%h %ad %an: %s",
            "--",
            ".",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Renders, stores and (when asked) mails the compliance report, through
/// every notifier or only the one named.
pub fn send_compliance(
    config: &Config,
    g: &Gathered,
    send: bool,
    only: Option<&str>,
) -> Result<Mail> {
    let plan = make_plan(config, g, Utc::now(), false);
    let m = compliance_mail(config, &plan, g)?;
    std::fs::create_dir_all(&config.settings.report_dir)
        .with_context(|| format!("creating {}", config.settings.report_dir.display()))?;
    let base = config.settings.report_dir.join(format!(
        "compliance-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::write(base.with_extension("txt"), &m.text)?;
    std::fs::write(base.with_extension("html"), &m.html)?;
    if send {
        for n in config
            .notify
            .values()
            .filter(|n| only.is_none_or(|o| o == n.name))
        {
            match mail::send(n, &m, Retry::default()) {
                Ok(()) => println!("mailed the compliance report through `{}`", n.name),
                Err(e) => eprintln!("warning: {e}; the report stays in {}", base.display()),
            }
        }
    }
    Ok(m)
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let mut out = std::io::stdout().lock();
    if args.compliance {
        let mut catalog =
            open_catalog(&catalog_path(&args.location, Some(&config))?, Some(&config))?;
        let g = gather(&config, &mut catalog)?;
        let m = send_compliance(&config, &g, args.send, None)?;
        write!(out, "{}", m.text)?;
        return Ok(EXIT_OK);
    }
    let newest = std::fs::read_dir(&config.settings.report_dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
                && p.extension().is_some_and(|x| x == "txt")
        })
        .max();
    let Some(file) = newest else {
        bail!(
            "no run report in {} yet: run `coffer apply` first",
            config.settings.report_dir.display()
        );
    };
    let text = std::fs::read_to_string(&file)?;
    write!(out, "{text}")?;
    if args.send {
        let html = std::fs::read_to_string(file.with_extension("html")).unwrap_or_default();
        let m = Mail {
            subject: text
                .lines()
                .next()
                .unwrap_or("coffer run report")
                .to_string(),
            text,
            html,
        };
        for n in config.notify.values() {
            match mail::send(n, &m, Retry::default()) {
                Ok(()) => writeln!(out, "mailed the run report through `{}`", n.name)?,
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    }
    Ok(EXIT_OK)
}
