//! What each tier should hold for a VM: restic-style retention per tier,
//! the copies a kept point still lacks, the prunes of what no rule keeps or
//! what failed verification, the reasons a prune is held back (the newest
//! good point, the base of the next incremental, the only source of a
//! pending copy, Object Lock, an unlisted tier), and the mass-prune floor
//! that lets one run remove at most half of a tier's points.
//!
//! It owns these decisions as `Copy`, `Prune`, `KeepBlocked` and `Gc`
//! actions. It must never perform I/O, and never plan the prune of a point's
//! last healthy copy.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::action::Action;
use super::input::{CopyInfo, PlanInput, PointInfo};
use super::retention::{KeepReason, reasons_text};
use crate::inventory::VmRecord;
use crate::policy::model::Policy;

/// Why the newest healthy point on the backup tier is kept, even when
/// retention lets it go (its tier keeps a point whose copy there failed
/// verification and is yet to be copied again).
pub const BASE_OF_NEXT_BACKUP: &str = "the base of the next incremental backup";

/// The reason of a prune that removes a copy which failed verification.
pub const FAILED_VERIFICATION: &str = "the copy failed data verification";

/// Why a copy that failed verification is kept: the point has no healthy
/// copy anywhere, and retention has not passed it yet.
pub const ONLY_DAMAGED_COPIES: &str = "the point has no healthy copy left: this damaged one is kept for what it still restores until retention passes it";

/// Why a prune retention asks for waits for a later run: the tier's
/// mass-prune floor (at most half of a tier's points in one run).
pub const MASS_PRUNE_FLOOR: &str = "the mass-prune floor defers it to a later run";

/// Retention verdicts: point id → the rules that keep it (absent: forget).
pub type Kept<'p> = BTreeMap<&'p str, Vec<KeepReason>>;

/// Retention by restic's `forget` rules over a VM's good points: what
/// `tier` should hold, with the rules that keep each point.
pub fn restic_retention<'p>(points: &[&'p PointInfo], policy: &Policy, tier: &str) -> Kept<'p> {
    let Some(rules) = policy.retain.get(tier) else {
        return Kept::new();
    };
    let good: Vec<&PointInfo> = points.iter().copied().filter(|p| p.good()).collect();
    let created: Vec<DateTime<Utc>> = good.iter().map(|p| p.created).collect();
    super::retention::decide(&created, rules, policy.timezone())
        .into_iter()
        .filter(|(_, reasons)| !reasons.is_empty())
        .map(|(i, reasons)| (good[i].point_id.as_str(), reasons))
        .collect()
}

/// A prune retention asks for, held until the tier's mass-prune floor is
/// known: borrowed, since a large site plans tens of thousands.
pub(super) struct PendingPrune<'a> {
    created: DateTime<Utc>,
    vm: &'a str,
    point: &'a str,
    reason: &'static str,
}

/// Tier name → the prunes on it.
pub(super) type PrunesPerTier<'a> = BTreeMap<&'a str, Vec<PendingPrune<'a>>>;

#[allow(clippy::too_many_arguments)]
pub(super) fn plan_tiers<'a>(
    input: &PlanInput<'_>,
    policy: &Policy,
    vm: &'a VmRecord,
    points: &[&'a PointInfo],
    retain: &dyn for<'p> Fn(&[&'p PointInfo], &Policy, &str) -> Kept<'p>,
    actions: &mut Vec<Action>,
    prunes: &mut PrunesPerTier<'a>,
) {
    let newest_good = points.iter().find(|p| p.good()).map(|p| p.point_id.clone());
    // The base of the next incremental: pruning it would make that a full.
    let base = points
        .iter()
        .find(|p| p.healthy_on(&policy.backup_to))
        .map(|p| p.point_id.as_str());
    let is_base = |p: &PointInfo, tier: &str| tier == policy.backup_to && base == Some(&p.point_id);
    // What each tier's retention keeps, over all the VM's points (a tier
    // holds the points its retention keeps, wherever they are now).
    let mut keeps: BTreeMap<&str, Kept> = BTreeMap::new();
    for tier in policy.retain.keys() {
        keeps.insert(tier.as_str(), retain(points, policy, tier));
    }
    let by_id: BTreeMap<&str, &PointInfo> =
        points.iter().map(|p| (p.point_id.as_str(), *p)).collect();
    // Copies first: a kept point the tier lacks, from a tier that has it.
    let mut pending_sources: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (tier, kept) in &keeps {
        for (point_id, rules) in kept {
            let Some(p) = by_id.get(point_id) else {
                continue;
            };
            // A damaged copy on the tier is pruned first (below) and the
            // plan after that copies the point again, from the source this
            // plan keeps for it.
            let damaged = p.copies.get(tier).is_some_and(|c| !c.healthy());
            if (p.copies.contains_key(tier) && !damaged) || !p.good() {
                continue;
            }
            // A source that reads at once before a tape, a tape before one
            // that must be thawed.
            let cold = |t: &str| input.config.tiers.get(t).and_then(|t| t.thaw_note());
            let rank = |t: &str| input.config.tiers.get(t).map_or(0, |t| t.read_rank());
            if let Some(from) = p
                .copies
                .iter()
                .filter(|(t, c)| c.healthy() && !input.unlisted_tiers.contains(*t))
                .map(|(t, _)| t)
                .min_by_key(|t| rank(t))
            {
                pending_sources.insert((p.point_id.as_str(), from));
                if damaged {
                    continue;
                }
                actions.push(Action::Copy {
                    vm: vm.name.clone(),
                    point: p.point_id.clone(),
                    from: from.to_string(),
                    to: tier.to_string(),
                    reason: match cold(from) {
                        Some(note) => format!(
                            "kept by {}; {note}, and the copy runs once it reads",
                            reasons_text(rules)
                        ),
                        None if rank(from) == 1 => format!(
                            "kept by {}; {}",
                            reasons_text(rules),
                            crate::policy::model::TAPE_NOTE
                        ),
                        None => format!("kept by {}", reasons_text(rules)),
                    },
                });
            }
        }
    }
    let locked = |c: &CopyInfo| c.locked_until.is_some_and(|u| u > input.now);
    // A copy this plan does not prune: healthy, and kept, locked, on an
    // unlisted tier or on a tier without retention, or the newest good point.
    let stays = |p: &PointInfo, tier: &str, c: &CopyInfo| {
        c.healthy()
            && (input.unlisted_tiers.contains(tier)
                || keeps
                    .get(tier)
                    .is_none_or(|k| k.contains_key(p.point_id.as_str()))
                || locked(c)
                || Some(&p.point_id) == newest_good.as_ref()
                || is_base(p, tier))
    };
    // Prunes: what a tier holds that its retention does not keep.
    for &p in points {
        for (tier, copy) in &p.copies {
            let Some(kept) = keeps.get(tier) else {
                continue;
            };
            if kept.contains_key(p.point_id.as_str()) && copy.healthy() {
                continue;
            }
            // A copy that failed verification, of a point with no healthy
            // copy to copy it again from: what it still restores is all
            // there is of that point. It goes when retention has passed it
            // (a point older than every point the tier keeps), not before.
            let oldest_kept = || {
                (kept.keys().filter_map(|id| by_id.get(id)))
                    .map(|k| k.created)
                    .min()
            };
            let blocked = if input.unlisted_tiers.contains(tier) {
                Some("the tier's listing failed; nothing is pruned there".to_string())
            } else if !p.good() && oldest_kept().is_none_or(|oldest| p.created >= oldest) {
                Some(ONLY_DAMAGED_COPIES.to_string())
            } else if Some(&p.point_id) == newest_good.as_ref() && copy.healthy() {
                Some("the newest good point of the VM is never pruned".to_string())
            } else if is_base(p, tier) && copy.healthy() {
                Some(BASE_OF_NEXT_BACKUP.to_string())
            } else if pending_sources.contains(&(p.point_id.as_str(), tier))
                && !p.copies.iter().any(|(t, c)| t != tier && stays(p, t, c))
            {
                // If the copy failed, the point would be gone.
                Some("the only source of a pending copy".to_string())
            } else {
                copy.locked_until.filter(|_| locked(copy)).map(|u| {
                    format!(
                        "locked (immutable) until {}",
                        crate::policy::units::format_time(policy.timezone(), u)
                    )
                })
            };
            match blocked {
                Some(reason) => actions.push(Action::KeepBlocked {
                    vm: vm.name.clone(),
                    point: p.point_id.clone(),
                    tier: tier.to_string(),
                    reason,
                }),
                None => prunes.entry(tier).or_default().push(PendingPrune {
                    created: p.created,
                    vm: &vm.name,
                    point: &p.point_id,
                    reason: if copy.healthy() {
                        "no retention rule keeps it"
                    } else {
                        FAILED_VERIFICATION
                    },
                }),
            }
        }
    }
}

/// Turns each tier's pending prunes into actions under the tier's
/// mass-prune floor.
pub(super) fn mass_prune_floor(
    input: &PlanInput<'_>,
    prunes_per_tier: PrunesPerTier<'_>,
    actions: &mut Vec<Action>,
) {
    // The mass-prune floor, per tier: one run removes at most half of a
    // tier's points, the oldest first, and says how many wait. Retention
    // still makes progress every run: a backlog (runs killed before their
    // prune phase, a retention made shorter) shrinks run by run, visibly,
    // instead of blocking every prune for good.
    // Each tier's points, counted in one pass over the site.
    let tiers: Vec<&str> = prunes_per_tier.keys().copied().collect();
    let mut totals = vec![0usize; tiers.len()];
    if !tiers.is_empty() {
        for p in input.points.iter() {
            for t in p.copies.keys() {
                if let Some(i) = tiers.iter().position(|x| *x == t) {
                    totals[i] += 1;
                }
            }
        }
    }
    for ((tier, mut prunes), total) in prunes_per_tier.into_iter().zip(totals) {
        if prunes.is_empty() {
            continue;
        }
        actions.reserve(prunes.len() + 2);
        let allowance = if input.allow_mass_prune || prunes.len() * 2 <= total {
            prunes.len()
        } else {
            (total / 2).max(1)
        };
        prunes.sort_by(|a, b| (a.created, a.point).cmp(&(b.created, b.point)));
        let waiting = prunes.split_off(allowance.min(prunes.len()));
        if !waiting.is_empty() {
            actions.push(Action::Alert {
                vm: None,
                message: format!(
                    "tier `{tier}`: retention would prune {} of its {total} points; the mass-prune floor lets one run remove at most half, so this run prunes the oldest {}, and {} remain for the next runs (--allow-mass-prune removes them at once)",
                    prunes.len() + waiting.len(),
                    prunes.len(),
                    waiting.len()
                ),
            });
        }
        for p in waiting {
            actions.push(Action::KeepBlocked {
                vm: p.vm.to_string(),
                point: p.point.to_string(),
                tier: tier.to_string(),
                reason: format!("{MASS_PRUNE_FLOOR} (more than half of the tier's {total} points)"),
            });
        }
        for p in &prunes {
            actions.push(Action::Prune {
                vm: p.vm.to_string(),
                point: p.point.to_string(),
                tier: tier.to_string(),
                reason: p.reason.into(),
            });
        }
        if !prunes.is_empty() {
            actions.push(Action::Gc {
                tier: tier.to_string(),
                reason: "points were pruned".into(),
            });
        }
    }
}
