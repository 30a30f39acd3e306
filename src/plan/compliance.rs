//! 3-2-1-1-0 and the RPO for one VM, from the copies of its points: pure,
//! like the rest of the planner, which lists the result with the plan.
//!
//! It reads points from `input` and never imports `planner`, which calls
//! it. It must never perform I/O or read the clock: `now` is an argument.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::input::PointInfo;
use crate::policy::Config;
use crate::policy::model::{Policy, VmFacts};

/// Where a VM stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    Ok,
    Breach,
    /// Its source could not be read: nothing is known of the VM now, which
    /// counts as a breach.
    Unknown,
}

/// 3-2-1-1-0 and RPO for one VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VmCompliance {
    pub vm: String,
    pub vm_uuid: String,
    /// The source the VM is on (`None`: its points predate coffer recording
    /// it and its source could not be read).
    pub source: Option<String>,
    pub standing: Standing,
    /// Why the source could not be read, when the standing is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// The policy that selects the VM ("" when none is known).
    pub policy: String,
    /// Copies of the newest good point, counting production.
    pub copies: u32,
    pub media: u32,
    pub offsite: u32,
    pub immutable: u32,
    /// Copies whose data verification found damage.
    pub verify_errors: u32,
    /// Drills whose newest run failed its guest checks (fsck, boot,
    /// scripts): a finding, separate from the data.
    pub guest_check_failures: u32,
    pub newest_good: Option<DateTime<Utc>>,
    pub rpo_met: Option<bool>,
    /// Each rule that is not met, in words.
    pub violations: Vec<String>,
}

pub(super) fn vm_compliance(
    config: &Config,
    policy: &Policy,
    source: &str,
    vm_name: &str,
    vm_uuid: &str,
    points: &[&PointInfo],
    now: DateTime<Utc>,
) -> VmCompliance {
    let newest = points.iter().find(|p| p.good());
    let source_site = config.sources.get(source).and_then(|s| s.site.clone());
    let (mut copies, mut media, mut offsite, mut immutable) = (1u32, BTreeSet::new(), 0u32, 0u32);
    // Production is one copy on disk at the source's site.
    media.insert("disk".to_string());
    if let Some(p) = newest {
        for (tier_name, copy) in p.copies.iter().filter(|(_, c)| c.healthy()) {
            let Some(tier) = config.tiers.get(tier_name) else {
                continue;
            };
            copies += 1;
            media.insert(format!("{:?}", tier.media).to_lowercase());
            if tier.site.is_some() && tier.site != source_site {
                offsite += 1;
            }
            // The "1" of 3-2-1-1-0: immutable, or offline (media that leave
            // the library once written).
            if copy.locked_until.is_some_and(|u| u > now)
                || tier.immutable_for.is_some()
                || tier.offline
            {
                immutable += 1;
            }
        }
    }
    let verify_errors = points
        .iter()
        .flat_map(|p| p.copies.values())
        .filter(|c| c.verified_ok == Some(false))
        .count() as u32;
    let rpo_met = policy
        .rpo
        .map(|rpo| newest.is_some_and(|p| (now - p.created).to_std().unwrap_or_default() <= rpo));
    let c = &config.compliance;
    let mut violations = Vec::new();
    let mut rule = |ok: bool, text: String| {
        if !ok {
            violations.push(text);
        }
    };
    rule(
        copies >= c.copies,
        format!("{copies} copies of {} required", c.copies),
    );
    rule(
        media.len() as u32 >= c.media,
        format!("{} media of {} required", media.len(), c.media),
    );
    rule(
        offsite >= c.offsite,
        format!("{offsite} offsite copies of {} required", c.offsite),
    );
    rule(
        immutable >= c.immutable,
        format!("{immutable} immutable copies of {} required", c.immutable),
    );
    rule(
        verify_errors <= c.verify_errors,
        format!("{verify_errors} copies failed data verification"),
    );
    if rpo_met == Some(false) {
        violations.push("RPO breached".into());
    }
    VmCompliance {
        vm: vm_name.to_string(),
        vm_uuid: vm_uuid.to_string(),
        source: Some(source.to_string()),
        standing: if violations.is_empty() {
            Standing::Ok
        } else {
            Standing::Breach
        },
        source_error: None,
        policy: policy.name.clone(),
        copies,
        media: media.len() as u32,
        offsite,
        immutable,
        verify_errors,
        guest_check_failures: 0,
        newest_good: newest.map(|p| p.created),
        rpo_met,
        violations,
    }
}

/// The standing of a VM coffer protected whose source could not be read
/// (`unreachable`: each source that may hold it, with its error): unknown,
/// a breach, with what its points still show. `points` newest first.
pub(super) fn unknown_vm(
    config: &Config,
    vm_uuid: &str,
    source: Option<&str>,
    vm_name: &str,
    unreachable: &[(&str, &str)],
    points: &[&PointInfo],
    now: DateTime<Utc>,
) -> VmCompliance {
    let facts = |s| VmFacts {
        source: s,
        name: vm_name,
        folder: "",
        tags: &[],
        datastores: &[],
    };
    let policy = config.policies.values().find(|p| {
        unreachable
            .iter()
            .any(|(s, _)| source.is_none_or(|own| own == *s) && p.selector.matches(&facts(s)))
    });
    let mut c = match policy {
        Some(p) => vm_compliance(
            config,
            p,
            source.unwrap_or(unreachable[0].0),
            vm_name,
            vm_uuid,
            points,
            now,
        ),
        None => VmCompliance {
            vm: vm_name.to_string(),
            vm_uuid: vm_uuid.to_string(),
            source: None,
            standing: Standing::Unknown,
            source_error: None,
            policy: String::new(),
            copies: 0,
            media: 0,
            offsite: 0,
            immutable: 0,
            verify_errors: 0,
            guest_check_failures: 0,
            newest_good: points.iter().find(|p| p.good()).map(|p| p.created),
            rpo_met: None,
            violations: Vec::new(),
        },
    };
    let newest = points.iter().find(|p| p.good()).or(points.first());
    let age = newest.map_or("no point".to_string(), |p| {
        format!(
            "newest point {} old",
            crate::policy::units::format_duration((now - p.created).to_std().unwrap_or_default())
        )
    });
    let errors = unreachable
        .iter()
        .map(|(s, e)| format!("source `{s}` could not be read: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    c.violations.insert(0, format!("unknown: {errors}; {age}"));
    c.source = source.map(str::to_string);
    c.standing = Standing::Unknown;
    c.source_error = Some(
        unreachable
            .iter()
            .map(|(_, e)| *e)
            .collect::<Vec<_>>()
            .join("; "),
    );
    c
}
