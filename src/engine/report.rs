//! The reports: the run report of `apply` (what each action came to, then
//! each VM's standing) and the compliance report (each VM's 3-2-1-1-0 and
//! RPO standing, the alerts, what each tier stores, the policy commits
//! since the last report), rendered from templates, written under the
//! report directory and mailed through the notifiers. A mail problem is an
//! event, never a failed run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;

use super::gather::{Gathered, make_plan};
use super::observer::{Event, Observer, Outcome, ReportKind};
use super::tiers::open_tier;
use crate::plan::planner::{Action, Plan};
use crate::policy::Config;
use crate::policy::model::Notifier;
use crate::report::mail::{self, Mail, Retry};
use crate::report::model::{ActionLine, ComplianceReport, Required, RunReport, TierLine, VmLine};
use crate::report::render::Renderer;

/// The run report of `apply`, rendered: what each action came to, then
/// each VM's standing.
pub fn run_mail(
    config: &Config,
    run_id: &str,
    plan: &Plan,
    gathered: &Gathered,
    outcomes: &[Outcome],
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
        compliance: vm_lines(plan, gathered),
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
            vm: vm_label(c, &plan.compliance),
            policy: c.policy.clone(),
            ok: c.violations.is_empty(),
            standing: standing_word(c).to_string(),
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
        let stored = open_tier(config, name)
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
    observer: &dyn Observer,
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
            mail_through(n, &m, ReportKind::Compliance, &base, observer);
        }
    }
    Ok(m)
}

/// Mails `m` through the notifier `n` and tells the observer how it went;
/// a report that cannot be mailed stays in `kept_in`.
pub fn mail_through(
    n: &Notifier,
    m: &Mail,
    report: ReportKind,
    kept_in: &Path,
    observer: &dyn Observer,
) {
    observer.event(&match mail::send(n, m, Retry::default()) {
        Ok(()) => Event::Mailed {
            report,
            notifier: &n.name,
            to: &n.to,
        },
        Err(e) => Event::MailFailed {
            report,
            notifier: &n.name,
            error: e.to_string(),
            kept_in,
        },
    });
}

/// The newest run report under the report directory (its `.txt`).
pub fn newest_run_report(config: &Config) -> Result<PathBuf> {
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
    match newest {
        Some(file) => Ok(file),
        None => bail!(
            "no run report in {} yet: run `coffer apply` first",
            config.settings.report_dir.display()
        ),
    }
}

/// Mails a stored run report (its text and the `.html` beside it) through
/// every notifier.
pub fn send_stored_report(config: &Config, file: &Path, observer: &dyn Observer) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
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
        mail_through(n, &m, ReportKind::StoredRun, file, observer);
    }
    Ok(())
}

/// A VM's name for people, with its source (`name@source`) when another VM
/// in `all` has the same name.
pub fn vm_label(
    c: &crate::plan::compliance::VmCompliance,
    all: &[crate::plan::compliance::VmCompliance],
) -> String {
    let twice = all.iter().filter(|o| o.vm == c.vm).count() > 1;
    match (&c.source, twice) {
        (Some(s), true) => format!("{}@{s}", c.vm),
        _ => c.vm.clone(),
    }
}

/// A VM's standing in one word, for people: `ok`, `BREACH`, or `UNKNOWN`
/// when its source could not be read.
pub fn standing_word(c: &crate::plan::compliance::VmCompliance) -> &'static str {
    use crate::plan::compliance::Standing;
    match c.standing {
        Standing::Ok => "ok",
        Standing::Breach => "BREACH",
        Standing::Unknown => "UNKNOWN",
    }
}
