//! The reports: the run report of `apply` (what each action came to, then
//! each VM's standing) and the compliance report (each VM's 3-2-1-1-0 and
//! RPO standing, the alerts, what each tier stores, the policy commits
//! since the last report), rendered from templates, written under the
//! report directory and mailed through the notifiers. A mail problem is an
//! event, never a failed run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use super::gather::{Gathered, make_plan};
use super::observer::{Event, Observer, Outcome, ReportKind};
use super::tiers::open_tier;
use crate::plan::planner::{Action, Plan};
use crate::policy::Config;
use crate::policy::model::Notifier;
use crate::report::charts;
use crate::report::mail::{self, Mail, Retry};
use crate::report::model::{
    ActionLine, Chart, ComplianceReport, FailureLine, Required, RunReport, RunSummary, Shortfalls,
    TierLine, VmLine,
};
use crate::report::render::Renderer;

/// When the next run starts: the earliest next fire time of any policy,
/// in the policies' time zone.
fn next_run(config: &Config, after: DateTime<Utc>) -> Option<String> {
    config
        .policies
        .values()
        .filter_map(|p| p.schedule.next_after(after))
        .min()
        .map(|t| local_time(config, t))
}

/// A time as reports show it: in the policies' time zone, with its offset.
pub fn local_time(config: &Config, t: DateTime<Utc>) -> String {
    crate::policy::units::format_time(config.settings.timezone, t)
}

/// What coffer does next about a failed action.
fn what_next(action: Option<&Action>, next: Option<&str>) -> String {
    let when = next.map_or("the next run".to_string(), |t| {
        format!("the next run ({t})")
    });
    match action {
        Some(Action::Backup { .. }) => {
            format!("{when} backs the VM up again; its older points stay until then")
        }
        Some(Action::Copy { .. }) => {
            format!("{when} copies the point again; prunes on that tier wait for it")
        }
        Some(Action::Prune { .. }) | Some(Action::Gc { .. }) => {
            format!("{when} tries again; nothing was deleted that should be kept")
        }
        Some(Action::Drill { .. }) => format!(
            "the drill stays due: {when} runs it again; the finding is in the compliance report"
        ),
        Some(Action::RemoveSnapshot { .. }) | Some(Action::Consolidate { .. }) => {
            format!("{when} finds the snapshot again and retries; check the host if it stays")
        }
        _ => format!("{when} plans it again"),
    }
}

/// The run report of `apply`, rendered: a summary, every failure with its
/// reason and what comes next, what each action came to, each VM's
/// standing, and a chart of the backups.
pub fn run_mail(
    config: &Config,
    run_id: &str,
    started: DateTime<Utc>,
    plan: &Plan,
    gathered: &Gathered,
    outcomes: &[Outcome],
    cancelled: bool,
) -> Result<Mail> {
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let total = plan.compliance.len();
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
    let site = &config.settings.name;
    let subject = format!(
        "[coffer {site}] run {run_id} {status} ({} actions, {failed} failed{})",
        outcomes.len(),
        if breaches == 0 {
            String::new()
        } else {
            format!(", {breaches} of {total} VMs out of policy")
        }
    );
    let size = crate::policy::units::format_size;
    let (read, stored) = outcomes
        .iter()
        .filter_map(|o| o.bytes)
        .fold((0, 0), |(r, s), b| (r + b.read, s + b.stored));
    let next = next_run(config, Utc::now());
    let backups: Vec<(&str, f64, u64)> = outcomes
        .iter()
        .filter_map(|o| match (&o.planned, o.bytes) {
            (Some(Action::Backup { vm, .. }), Some(b)) => Some((vm.as_str(), o.seconds, b.read)),
            _ => None,
        })
        .collect();
    let chart = if backups.is_empty() {
        String::new()
    } else {
        charts::bars(
            "Backups of this run: bytes read per VM",
            &backups
                .iter()
                .map(|(vm, secs, read)| charts::Bar {
                    label: vm.to_string(),
                    value: *read as f64,
                    color: charts::NEUTRAL,
                    text: format!("{} in {secs:.1}s", size(*read)),
                })
                .collect::<Vec<_>>(),
        )
    };
    let model = RunReport {
        run_id: run_id.to_string(),
        subject: subject.clone(),
        status: status.to_string(),
        failed: failed > 0,
        summary: RunSummary {
            site: site.clone(),
            vms_ok: total - breaches,
            vms_total: total,
            actions: outcomes.len(),
            failed,
            read: size(read),
            stored: size(stored),
            duration: crate::policy::units::format_duration(
                (Utc::now() - started).to_std().unwrap_or_default(),
            ),
            next_run: next.clone(),
        },
        failures: outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| FailureLine {
                action: o.action.clone(),
                reason: o.detail.clone(),
                next: what_next(o.planned.as_ref(), next.as_deref()),
            })
            .collect(),
        actions: outcomes
            .iter()
            .map(|o| ActionLine {
                ok: o.ok,
                action: o.action.clone(),
                detail: o.detail.clone(),
                seconds: format!("{:.1}", o.seconds),
            })
            .collect(),
        compliance: vm_lines(config, plan, gathered),
        chart,
        chart_lines: backups
            .iter()
            .map(|(vm, secs, read)| format!("{vm}: read {} in {secs:.1}s", size(*read)))
            .collect(),
    };
    Renderer::new(&config.dir)
        .and_then(|r| r.render("run", &subject, &model))
        .map_err(|e| anyhow!(e))
}

/// Each VM's standing, for the reports.
pub fn vm_lines(config: &Config, plan: &Plan, g: &Gathered) -> Vec<VmLine> {
    let req = &config.compliance;
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
            newest_good: c.newest_good.map(|t| local_time(config, t)),
            rpo: c
                .rpo_met
                .map(|m| if m { "met" } else { "breached" }.to_string()),
            last_drill: g.last_drill(&c.vm_uuid, config.settings.timezone),
            last_recovery: g.last_recovery(&c.vm_uuid, config.settings.timezone),
            short: Shortfalls {
                copies: c.copies < req.copies,
                media: c.media < req.media,
                offsite: c.offsite < req.offsite,
                immutable: c.immutable < req.immutable,
                verify_errors: c.verify_errors > req.verify_errors,
                guest_check_failures: c.guest_check_failures > 0,
                rpo: c.rpo_met == Some(false),
            },
        })
        .collect()
}

/// What one compliance report keeps beside it for the next reports' charts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct History {
    generated: DateTime<Utc>,
    ok: usize,
    total: usize,
    /// Tier → bytes its objects took.
    stored: std::collections::BTreeMap<String, u64>,
}

/// How many reports the charts over time show.
const HISTORY: usize = 12;

/// The summaries of earlier compliance reports, oldest first.
fn history(config: &Config) -> Vec<History> {
    let mut found: Vec<(String, History)> = std::fs::read_dir(&config.settings.report_dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("compliance-") && name.ends_with(".json")) {
                return None;
            }
            let h = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((name, h))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = found.len().saturating_sub(HISTORY - 1);
    found.into_iter().skip(skip).map(|(_, h)| h).collect()
}

/// The compliance report's charts: standing over the last reports,
/// stored bytes per tier over time, RPO margin per VM.
fn compliance_charts(config: &Config, plan: &Plan, now: &History) -> Vec<Chart> {
    let mut past = history(config);
    past.push(now.clone());
    let labels: Vec<String> = past
        .iter()
        .map(|h| {
            h.generated
                .with_timezone(&config.settings.timezone)
                .format("%m-%d %H:%M")
                .to_string()
        })
        .collect();
    let mut out = Vec::new();
    let title = format!("VMs that meet their policy, last {} reports", past.len());
    out.push(Chart {
        svg: charts::lines(
            &title,
            &labels,
            &[
                charts::Series {
                    name: "meet their policy".into(),
                    color: charts::GOOD,
                    values: past.iter().map(|h| Some(h.ok as f64)).collect(),
                },
                charts::Series {
                    name: "out of policy".into(),
                    color: charts::BAD,
                    values: past.iter().map(|h| Some((h.total - h.ok) as f64)).collect(),
                },
            ],
            &|v| format!("{v:.0}"),
        ),
        lines: past
            .iter()
            .zip(&labels)
            .map(|(h, l)| format!("{l}: {} of {} meet their policy", h.ok, h.total))
            .collect(),
        title,
    });
    let size = crate::policy::units::format_size;
    let palette = [charts::NEUTRAL, "#a60", "#808", "#088", "#555"];
    let series: Vec<charts::Series> = config
        .tiers
        .keys()
        .enumerate()
        .map(|(i, t)| charts::Series {
            name: t.clone(),
            color: palette[i % palette.len()],
            values: past
                .iter()
                .map(|h| h.stored.get(t).map(|b| *b as f64))
                .collect(),
        })
        .collect();
    let title = "Stored per tier".to_string();
    out.push(Chart {
        svg: charts::lines(&title, &labels, &series, &|v| size(v as u64)),
        lines: config
            .tiers
            .keys()
            .map(|t| {
                let first = past.iter().find_map(|h| h.stored.get(t));
                let last = now.stored.get(t);
                match (first, last) {
                    (Some(f), Some(l)) => format!("{t}: {} (was {})", size(*l), size(*f)),
                    (_, Some(l)) => format!("{t}: {}", size(*l)),
                    _ => format!("{t}: unknown"),
                }
            })
            .collect(),
        title,
    });
    let margins: Vec<(String, f64)> = plan
        .compliance
        .iter()
        .filter_map(|c| {
            let rpo = config.policies.get(&c.policy)?.rpo?;
            let rpo = chrono::Duration::from_std(rpo).ok()?;
            let left = match c.newest_good {
                Some(t) => rpo - (Utc::now() - t),
                None => -rpo,
            };
            Some((
                vm_label(c, &plan.compliance),
                left.num_minutes() as f64 / 60.0,
            ))
        })
        .collect();
    if !margins.is_empty() {
        let title = "RPO margin per VM (hours until the RPO is missed)".to_string();
        let text = |h: f64| {
            if h >= 0.0 {
                format!("{h:.1} h left")
            } else {
                format!("{:.1} h overdue", -h)
            }
        };
        out.push(Chart {
            svg: charts::bars(
                &title,
                &margins
                    .iter()
                    .map(|(vm, h)| charts::Bar {
                        label: vm.clone(),
                        value: *h,
                        color: if *h >= 0.0 { charts::GOOD } else { charts::BAD },
                        text: text(*h),
                    })
                    .collect::<Vec<_>>(),
            ),
            lines: margins
                .iter()
                .map(|(vm, h)| format!("{vm}: {}", text(*h)))
                .collect(),
            title,
        });
    }
    out
}

/// The compliance report of a plan, rendered, with the summary it keeps
/// for the charts of later reports; its subject names the installation
/// and the standing.
fn compliance_report(config: &Config, plan: &Plan, g: &Gathered) -> Result<(Mail, History)> {
    let vms = vm_lines(config, plan, g);
    let total = vms.len();
    let ok_count = vms.iter().filter(|v| v.ok).count();
    let pct = |n: usize| (n * 100).checked_div(total).unwrap_or(0) as u32;
    let mut tiers = Vec::new();
    for name in config.tiers.keys() {
        // One listing of the tier: what its objects take.
        let stored_bytes = open_tier(config, name)
            .ok()
            .and_then(|r| r.stored_bytes().ok());
        tiers.push(TierLine {
            name: name.clone(),
            stored: stored_bytes.map_or("?".to_string(), crate::policy::units::format_size),
            stored_bytes,
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
    let now = History {
        generated: Utc::now(),
        ok: ok_count,
        total,
        stored: tiers
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.stored_bytes?)))
            .collect(),
    };
    let site = config.settings.name.clone();
    let model = ComplianceReport {
        generated: local_time(config, now.generated),
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
        charts: compliance_charts(config, plan, &now),
        site: site.clone(),
    };
    let subject = if ok_count == total {
        format!("[coffer {site}] {total} of {total} VMs meet their policy")
    } else {
        format!(
            "[coffer {site}] {} of {total} VMs out of policy",
            total - ok_count
        )
    };
    let mail = Renderer::new(&config.dir)
        .and_then(|r| r.render("compliance", &subject, &model))
        .map_err(|e| anyhow!(e))?;
    Ok((mail, now))
}

/// The compliance report of a plan, rendered.
pub fn compliance_mail(config: &Config, plan: &Plan, g: &Gathered) -> Result<Mail> {
    Ok(compliance_report(config, plan, g)?.0)
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
    let (m, summary) = compliance_report(config, &plan, g)?;
    std::fs::create_dir_all(&config.settings.report_dir)
        .with_context(|| format!("creating {}", config.settings.report_dir.display()))?;
    let base = config.settings.report_dir.join(format!(
        "compliance-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::write(base.with_extension("txt"), &m.text)?;
    std::fs::write(base.with_extension("html"), &m.html)?;
    // Kept for the charts of the next reports.
    std::fs::write(base.with_extension("json"), serde_json::to_vec(&summary)?)?;
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
