//! 3-2-1-1-0 and the RPO for one VM, from the copies of its points: pure,
//! like the rest of the planner, which lists the result with the plan.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::planner::PointInfo;
use crate::policy::Config;
use crate::policy::model::Policy;
use crate::vsphere::types::VmRecord;

/// 3-2-1-1-0 and RPO for one VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmCompliance {
    pub vm: String,
    pub vm_uuid: String,
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
    vm: &VmRecord,
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
            if copy.locked_until.is_some_and(|u| u > now) || tier.immutable_for.is_some() {
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
        vm: vm.name.clone(),
        vm_uuid: vm.instance_uuid.clone().unwrap_or_default(),
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
