//! Invariants of the planner and of retention, by proptest: a plan carried
//! out and made again at the same instant asks for nothing more (past the
//! steps coffer deliberately leaves to a later plan), the newest good point
//! of a VM is never pruned, and retention agrees with a reference written
//! straight from restic's documented `forget` rules.
//!
//! VMs are generated in the neutral model of `crate::inventory`; these
//! tests never talk to a host or read the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::planner::*;
use super::retention::{self, PointTime, Rule};
use crate::inventory::{ChangeId, DiskBacking, MoRef, SnapshotNode, VmDisk, VmRecord};
use crate::policy::Config;
use crate::policy::model::Retention;
use crate::repo::manifest::PointKind;

const SOURCE: &str = "esx";
const TIERS: [&str; 2] = ["local", "offsite"];
/// The KeepBlocked reason that defers a prune to the next plan.
const ONLY_SOURCE: &str = "the only source of a pending copy";

fn policies(tz: &str, window: bool) -> String {
    let window = if window {
        "window = \"22:00-06:00\"\n"
    } else {
        ""
    };
    format!(
        r#"
[settings]
timezone = "{tz}"

[sources.esx]
kind = "esxi"
url = "https://esx.example.com"
user = "u"
password = {{ env = "X" }}
site = "dc1"

[tiers.local]
backend = "local"
path = "/srv/local"
site = "dc1"

[tiers.offsite]
backend = "local"
path = "/srv/offsite"
site = "dc2"

[policies.nightly]
sources = ["esx"]
vms = ["db*"]
schedule = "0 0 1 * * *"
rpo = "26h"
full_every = "30d"
backup_to = "local"
{window}
[policies.nightly.retain.local]
last = 2

[policies.nightly.retain.offsite]
daily = 3
"#
    )
}

/// The policy directory in two zones, with and without a backup window;
/// each case replaces the retention.
fn configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut out = Vec::new();
        for tz in ["UTC", "Europe/Berlin"] {
            for window in [false, true] {
                let t = tempfile::tempdir().unwrap();
                std::fs::write(t.path().join("p.toml"), policies(tz, window)).unwrap();
                let loaded = crate::policy::load(t.path());
                out.push(
                    loaded
                        .config
                        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics)),
                );
            }
        }
        out
    })
}

fn base() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

#[derive(Debug, Clone)]
struct PointSpec {
    age_minutes: i64,
    full: bool,
    on_local: bool,
    on_offsite: bool,
    /// A copy that failed verification (index into `TIERS`).
    failed: Option<usize>,
    /// Object Lock on the first copy, relative to now.
    locked_hours: Option<i64>,
}

#[derive(Debug, Clone)]
struct VmSpec {
    /// Named `db…`, which the policy selects, or `web…`.
    matched: bool,
    has_uuid: bool,
    /// Still in the inventory (else its points belong to a vanished VM).
    present: bool,
    /// Snapshots: named like coffer's own or not, and their age.
    snapshots: Vec<(bool, i64)>,
    points: Vec<PointSpec>,
}

#[derive(Debug, Clone)]
struct World {
    config: usize,
    local: Retention,
    offsite: Retention,
    now_minutes: i64,
    vms: Vec<VmSpec>,
}

/// A retention validation accepts: at least one rule keeps something.
fn arb_rules() -> impl Strategy<Value = Retention> {
    let count = proptest::option::of(0u32..5);
    (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
        proptest::option::of(0u64..(10 * 86_400)),
    )
        .prop_map(|(last, hourly, daily, weekly, monthly, yearly, within)| {
            let mut r = Retention {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within: within.map(Duration::from_secs),
            };
            let counts = [r.last, r.hourly, r.daily, r.weekly, r.monthly, r.yearly];
            if counts.iter().all(|c| c.unwrap_or(0) == 0) && r.within.is_none_or(|d| d.is_zero()) {
                r.last = Some(1);
            }
            r
        })
}

fn arb_point() -> impl Strategy<Value = PointSpec> {
    (
        // Up to 40 days old, at minute resolution; sometimes only hours old.
        prop_oneof![1i64..(40 * 24 * 60), 1i64..(6 * 60)],
        any::<bool>(),
        0u8..3,
        proptest::option::weighted(0.1, 0usize..2),
        proptest::option::weighted(0.15, -48i64..480),
    )
        .prop_map(
            |(age_minutes, full, where_, failed, locked_hours)| PointSpec {
                age_minutes,
                full,
                on_local: where_ != 1,
                on_offsite: where_ != 0,
                failed,
                locked_hours,
            },
        )
}

fn arb_vm() -> impl Strategy<Value = VmSpec> {
    (
        proptest::bool::weighted(0.75),
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.9),
        prop::collection::vec((any::<bool>(), 0i64..(3 * 24 * 60)), 0..3),
        prop::collection::vec(arb_point(), 0..12),
    )
        .prop_map(|(matched, has_uuid, present, snapshots, points)| VmSpec {
            matched,
            has_uuid,
            present,
            snapshots,
            points,
        })
}

fn arb_world() -> impl Strategy<Value = World> {
    (
        0usize..4,
        arb_rules(),
        arb_rules(),
        0i64..(365 * 24 * 60),
        prop::collection::vec(arb_vm(), 1..=5),
    )
        .prop_map(|(config, local, offsite, now_minutes, vms)| World {
            config,
            local,
            offsite,
            now_minutes,
            vms,
        })
}

/// What exists: the inventory and the points, as the planner is given them.
#[derive(Debug, Clone)]
struct State {
    config: Config,
    now: DateTime<Utc>,
    inventory: Vec<(String, VmRecord)>,
    points: Vec<PointInfo>,
    unlisted: BTreeSet<String>,
    allow_mass_prune: bool,
    backups_taken: usize,
}

fn vm_name(i: usize, spec: &VmSpec) -> String {
    format!("{}{i:02}", if spec.matched { "db" } else { "web" })
}

fn build(world: &World) -> State {
    let mut config = configs()[world.config].clone();
    let policy = config.policies.get_mut("nightly").unwrap();
    policy.retain.insert("local".into(), world.local.clone());
    policy
        .retain
        .insert("offsite".into(), world.offsite.clone());
    let now = base() + TimeDelta::minutes(world.now_minutes);
    let mut inventory = Vec::new();
    let mut points = Vec::new();
    for (i, spec) in world.vms.iter().enumerate() {
        let name = vm_name(i, spec);
        let uuid = format!("uuid-{name}");
        if spec.present {
            inventory.push((
                SOURCE.to_string(),
                VmRecord {
                    moref: MoRef::new("VirtualMachine", &name),
                    name: name.clone(),
                    instance_uuid: spec.has_uuid.then(|| uuid.clone()),
                    power_state: None,
                    tools_running_status: None,
                    ip_address: None,
                    change_tracking_enabled: true,
                    consolidation_needed: false,
                    encryption_key: None,
                    vmx_path: None,
                    datacenter: None,
                    host: None,
                    disks: vec![VmDisk {
                        key: 2000,
                        capacity_bytes: 1 << 30,
                        file_name: format!("[ds1] {name}/{name}.vmdk"),
                        datastore: None,
                        change_id: Some(ChangeId("52 aa/9".into())),
                        disk_mode: Some("persistent".into()),
                        backing: DiskBacking::Vmdk,
                        slot: None,
                    }],
                    snapshots: spec
                        .snapshots
                        .iter()
                        .enumerate()
                        .map(|(k, (ours, age))| SnapshotNode {
                            snapshot: MoRef::new("VirtualMachineSnapshot", format!("{name}-{k}")),
                            name: if *ours {
                                format!("coffer-run{k}")
                            } else {
                                format!("manual {k}")
                            },
                            description: String::new(),
                            create_time: now - TimeDelta::minutes(*age),
                            quiesced: false,
                            children: vec![],
                        })
                        .collect(),
                },
            ));
        }
        for (j, p) in spec.points.iter().enumerate() {
            let mut copies = Copies::default();
            for (t, tier) in TIERS.iter().enumerate() {
                let on = if t == 0 { p.on_local } else { p.on_offsite };
                if !on {
                    continue;
                }
                let first = copies.is_empty();
                copies.insert(
                    tier.to_string(),
                    CopyInfo {
                        locked_until: p
                            .locked_hours
                            .filter(|_| first)
                            .map(|h| now + TimeDelta::hours(h)),
                        verified_ok: (p.failed == Some(t)).then_some(false),
                    },
                );
            }
            points.push(PointInfo {
                vm_uuid: uuid.as_str().into(),
                source: None,
                vm_name: name.as_str().into(),
                point_id: format!("p-{name}-{j:02}"),
                created: now - TimeDelta::minutes(p.age_minutes),
                kind: if p.full {
                    PointKind::Full
                } else {
                    PointKind::Incremental
                },
                consistency: PointConsistency::Crash,
                disks: Box::new([disk_entry(Some("52 aa/3".into()))]),
                copies,
            });
        }
    }
    State {
        config,
        now,
        inventory,
        points,
        unlisted: BTreeSet::new(),
        allow_mass_prune: true,
        backups_taken: 0,
    }
}

fn disk_entry(change_id: Option<Box<str>>) -> PointDisk {
    PointDisk {
        device_key: 2000,
        size_bytes: 1 << 30,
        change_id,
        backing: None,
    }
}

fn plan_of(state: &State) -> Plan {
    plan(
        &PlanInput {
            config: &state.config,
            inventory: state.inventory.clone(),
            unreachable_sources: Default::default(),
            points: state.points[..].into(),
            unlisted_tiers: state.unlisted.clone(),
            drills: vec![],
            dead_installation: None,
            now: state.now,
            allow_mass_prune: state.allow_mass_prune,
        },
        &restic_retention,
    )
}

fn remove_snapshot(nodes: &mut Vec<SnapshotNode>, name: &str) -> bool {
    if let Some(i) = nodes.iter().position(|n| n.name == name) {
        // Removing a snapshot hands its children to its parent.
        let gone = nodes.remove(i);
        nodes.extend(gone.children);
        return true;
    }
    nodes
        .iter_mut()
        .any(|n| remove_snapshot(&mut n.children, name))
}

/// Carries out the actions as the runner would, each one succeeding.
fn carry_out(state: &mut State, actions: &[Action]) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            Action::Backup {
                source,
                vm,
                tier,
                full,
                ..
            } => {
                let (_, record) = state
                    .inventory
                    .iter()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .ok_or_else(|| TestCaseError::fail(format!("backup of unknown VM {vm}")))?;
                let uuid = record.instance_uuid.clone().unwrap();
                let change_id = record.disks[0]
                    .change_id
                    .as_ref()
                    .map(|c| c.0.as_str().into());
                state.backups_taken += 1;
                state.points.push(PointInfo {
                    vm_uuid: uuid.into(),
                    source: None,
                    vm_name: vm.as_str().into(),
                    point_id: format!("new-{vm}-{}", state.backups_taken),
                    created: state.now,
                    kind: if *full {
                        PointKind::Full
                    } else {
                        PointKind::Incremental
                    },
                    consistency: PointConsistency::Crash,
                    disks: Box::new([disk_entry(change_id)]),
                    copies: [(tier.clone(), CopyInfo::default())].into_iter().collect(),
                });
            }
            Action::Copy {
                point, from, to, ..
            } => {
                let p = state
                    .points
                    .iter_mut()
                    .find(|p| &p.point_id == point)
                    .ok_or_else(|| TestCaseError::fail(format!("copy of unknown {point}")))?;
                prop_assert!(
                    p.copies.contains_key(from),
                    "copy of {point} from {from}, which lacks it"
                );
                prop_assert!(
                    !p.copies.contains_key(to),
                    "copy of {point} to {to}, which has it"
                );
                p.copies.insert(to.clone(), CopyInfo::default());
            }
            Action::Prune { point, tier, .. } => {
                let i = state
                    .points
                    .iter()
                    .position(|p| &p.point_id == point)
                    .ok_or_else(|| TestCaseError::fail(format!("prune of unknown {point}")))?;
                prop_assert!(
                    state.points[i].copies.remove(tier).is_some(),
                    "prune of {point} on {tier}, which lacks it"
                );
                if state.points[i].copies.is_empty() {
                    state.points.remove(i);
                }
            }
            Action::RemoveSnapshot {
                source,
                vm,
                snapshot,
                ..
            } => {
                let (_, record) = state
                    .inventory
                    .iter_mut()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .ok_or_else(|| TestCaseError::fail(format!("snapshot of unknown VM {vm}")))?;
                prop_assert!(
                    remove_snapshot(&mut record.snapshots, snapshot),
                    "{vm} has no snapshot {snapshot}"
                );
            }
            // Gc frees unreferenced chunks, a CBT reset starts a new
            // tracking epoch (the full after it records it): nothing the
            // planner sees.
            Action::Consolidate { source, vm, .. } => {
                let (_, record) = state
                    .inventory
                    .iter_mut()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .ok_or_else(|| {
                        TestCaseError::fail(format!("consolidation of unknown VM {vm}"))
                    })?;
                record.consolidation_needed = false;
            }
            Action::Gc { .. }
            | Action::ResetCbt { .. }
            | Action::Wait { .. }
            | Action::KeepBlocked { .. }
            | Action::Drill { .. }
            | Action::Alert { .. } => {}
        }
    }
    Ok(())
}

/// Work a plan asks for that changes what exists.
fn is_work(a: &Action) -> bool {
    matches!(
        a,
        Action::Backup { .. }
            | Action::Copy { .. }
            | Action::Prune { .. }
            | Action::RemoveSnapshot { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Carrying a plan out and planning again at the same instant leaves no
    /// work, except what the planner defers on purpose:
    ///
    /// - a backup adds a point retention has not seen yet, so the VMs
    ///   backed up may get copies and prunes on the next plan (the runner
    ///   plans again after its backups for this reason);
    /// - a copy's only source is not pruned in the plan that copies it (if
    ///   the copy failed, the point would be lost); the next plan prunes it;
    /// - a copy that failed verification is pruned, and the next plan
    ///   copies the point to that tier again if the tier keeps it; until
    ///   then the newest healthy point on the backup tier stays as the
    ///   base of the next backup, and is pruned after.
    ///
    /// Beyond those, the next plan holds no backup, copy, prune or snapshot
    /// removal, and four rounds always reach a plan with none.
    #[test]
    fn a_plan_carried_out_then_made_again_at_the_same_instant_has_no_work(world in arb_world()) {
        let mut state = build(&world);
        let mut previous = plan_of(&state);
        for round in 1..=4 {
            carry_out(&mut state, &previous.actions)?;
            let next = plan_of(&state);
            let backed_up: BTreeSet<&str> = previous
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Backup { vm, .. } => Some(vm.as_str()),
                    _ => None,
                })
                .collect();
            let deferred: BTreeSet<(&str, &str, &str)> = previous
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::KeepBlocked { vm, point, tier, reason }
                        if reason == ONLY_SOURCE || reason == BASE_OF_NEXT_BACKUP =>
                    {
                        Some((vm.as_str(), point.as_str(), tier.as_str()))
                    }
                    _ => None,
                })
                .collect();
            let repaired: BTreeSet<(&str, &str, &str)> = previous
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Prune { vm, point, tier, reason } if reason == FAILED_VERIFICATION => {
                        Some((vm.as_str(), point.as_str(), tier.as_str()))
                    }
                    _ => None,
                })
                .collect();
            for a in &next.actions {
                match a {
                    Action::Backup { .. } | Action::RemoveSnapshot { .. } => {
                        prop_assert!(false, "round {round}: {}\nafter {:#?}", a.line(), previous.actions);
                    }
                    Action::Copy { vm, point, to, .. } => prop_assert!(
                        backed_up.contains(vm.as_str())
                            || repaired.contains(&(vm.as_str(), point.as_str(), to.as_str())),
                        "round {round}: {}\nafter {:#?}", a.line(), previous.actions
                    ),
                    Action::Prune { vm, point, tier, .. } => prop_assert!(
                        backed_up.contains(vm.as_str())
                            || deferred.contains(&(vm.as_str(), point.as_str(), tier.as_str())),
                        "round {round}: {}\nafter {:#?}", a.line(), previous.actions
                    ),
                    _ => {}
                }
            }
            if !next.actions.iter().any(is_work) {
                return Ok(());
            }
            previous = next;
        }
        prop_assert!(false, "still work after four rounds: {:#?}", previous.actions);
    }

    /// The mass-prune floor never stops retention: without the
    /// confirmation, a tier on which retention asks for prunes gets at
    /// least one, at most half of its points go, the oldest first, and the
    /// prunes it defers are named in an alert with their number; carried
    /// out run after run, the tier reaches the plan the confirmed run makes.
    #[test]
    fn the_mass_prune_floor_makes_progress_every_run(world in arb_world()) {
        let mut state = build(&world);
        state.allow_mass_prune = false;
        for round in 1..=12 {
            let p = plan_of(&state);
            let mut asked: BTreeMap<&str, usize> = BTreeMap::new();
            let mut pruned: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &p.actions {
                match a {
                    Action::Prune { tier, .. } => {
                        *asked.entry(tier).or_default() += 1;
                        *pruned.entry(tier).or_default() += 1;
                    }
                    Action::KeepBlocked { tier, reason, .. } if reason.starts_with(MASS_PRUNE_FLOOR) => {
                        *asked.entry(tier).or_default() += 1;
                    }
                    _ => {}
                }
            }
            for (tier, n) in &asked {
                let done = pruned.get(tier).copied().unwrap_or(0);
                let total = state.points.iter().filter(|q| q.copies.contains_key(tier)).count();
                prop_assert!(done >= 1, "round {round}: tier {tier}: {n} prunes asked, none made");
                if done < *n {
                    prop_assert!(done <= (total / 2).max(1), "round {round}: {done} of {total} pruned");
                    let wait = format!("and {} remain for the next runs", n - done);
                    prop_assert!(
                        p.actions.iter().any(|a| matches!(a, Action::Alert { message, .. }
                            if message.starts_with(&format!("tier `{tier}`")) && message.contains(&wait))),
                        "round {round}: no alert on the backlog of {tier}"
                    );
                }
            }
            if !p.actions.iter().any(|a| matches!(a, Action::KeepBlocked { reason, .. } if reason.starts_with(MASS_PRUNE_FLOOR))) {
                return Ok(());
            }
            carry_out(&mut state, &p.actions)?;
        }
        prop_assert!(false, "the backlog was still deferred after twelve runs");
    }

    /// The newest good point of every VM a policy selects keeps all its
    /// healthy copies, whatever the retention, the locks, failed verifications,
    /// unlisted tiers and the mass-prune confirmation; the points of VMs the
    /// policy does not back up are not touched at all.
    #[test]
    fn the_newest_good_point_of_a_vm_is_never_pruned(
        world in arb_world(),
        allow_mass_prune in any::<bool>(),
        unlisted in prop::collection::btree_set(prop::sample::select(TIERS.to_vec()), 0..2),
    ) {
        let mut state = build(&world);
        state.allow_mass_prune = allow_mass_prune;
        state.unlisted = unlisted.iter().map(|t| t.to_string()).collect();
        let before = state.points.clone();
        let p = plan_of(&state);
        let planned: BTreeSet<String> = state
            .inventory
            .iter()
            .filter(|(_, v)| v.name.starts_with("db"))
            .filter_map(|(_, v)| v.instance_uuid.clone())
            .collect();
        carry_out(&mut state, &p.actions)?;
        let mut newest: BTreeMap<&str, &PointInfo> = BTreeMap::new();
        for q in before.iter().filter(|q| q.good()) {
            let e = newest.entry(&q.vm_uuid).or_insert(q);
            if (q.created, &q.point_id) > (e.created, &e.point_id) {
                *e = q;
            }
        }
        for (uuid, q) in newest {
            let after = state.points.iter().find(|x| x.point_id == q.point_id);
            prop_assert!(after.is_some(), "newest good point {} of {uuid} is gone", q.point_id);
            let after_tiers: Vec<&str> = after.unwrap().copies.keys().collect();
            let before_tiers: Vec<&str> =
                q.copies.iter().filter(|(_, c)| c.healthy()).map(|(t, _)| t).collect();
            prop_assert!(
                before_tiers.iter().all(|t| after_tiers.contains(t)),
                "newest good point {} of {uuid} lost copies: {before_tiers:?} → {after_tiers:?}",
                q.point_id
            );
        }
        for q in before.iter().filter(|q| !planned.contains(&*q.vm_uuid)) {
            let after = state.points.iter().find(|x| x.point_id == q.point_id);
            prop_assert_eq!(
                after.map(|x| x.copies.keys().collect::<Vec<_>>()),
                Some(q.copies.keys().collect::<Vec<_>>()),
                "point {} of a VM no policy backs up was touched", &q.point_id
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Retention against a reference written from restic's documentation.

/// The bucket of a local time for a period rule; `last` gives each point
/// its own bucket (its position).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bucket {
    Position(usize),
    Hour(i32, u32, u32),
    Day(i32, u32),
    Week(i32, u32),
    Month(i32, u32),
    Year(i32),
}

fn bucket(rule: Rule, local: NaiveDateTime, position: usize) -> Bucket {
    match rule {
        Rule::Last | Rule::Within => Bucket::Position(position),
        Rule::Hourly => Bucket::Hour(local.year(), local.ordinal(), local.hour()),
        Rule::Daily => Bucket::Day(local.year(), local.ordinal()),
        Rule::Weekly => {
            let w = local.iso_week();
            Bucket::Week(w.year(), w.week())
        }
        Rule::Monthly => Bucket::Month(local.year(), local.month()),
        Rule::Yearly => Bucket::Year(local.year()),
    }
}

/// `wall` in `tz`: the first of two repeated times; in a spring-forward
/// gap, the offset in force just before the gap.
fn wall_to_instant(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            let mut before = wall;
            let offset = loop {
                before -= TimeDelta::minutes(1);
                match tz.from_local_datetime(&before) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(_, t) => {
                        break chrono::Offset::fix(t.offset()).local_minus_utc();
                    }
                    LocalResult::None => {}
                }
            };
            (wall - TimeDelta::seconds(i64::from(offset))).and_utc()
        }
    }
}

/// Point id → the rules that keep it. Straight from the documentation:
/// newest first (ties in input order); each count rule keeps the newest
/// point of each of its first N buckets, and also the oldest point when
/// there are fewer than N buckets; `within D` keeps what is newer than the
/// newest point minus D (whole days on the local calendar).
fn reference(points: &[PointTime], rules: &Retention, tz: Tz) -> BTreeMap<String, BTreeSet<Rule>> {
    let mut sorted: Vec<&PointTime> = points.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.created));
    let mut kept: BTreeMap<String, BTreeSet<Rule>> = BTreeMap::new();
    let Some(newest) = sorted.first() else {
        return kept;
    };
    if let Some(d) = rules.within.filter(|d| !d.is_zero()) {
        let whole_days = d.as_secs() / 86_400;
        let local = newest.created.with_timezone(&tz).naive_local();
        let cutoff = wall_to_instant(tz, local - TimeDelta::days(whole_days as i64))
            - TimeDelta::seconds((d.as_secs() % 86_400) as i64);
        for p in sorted.iter().filter(|p| p.created > cutoff) {
            kept.entry(p.id.clone()).or_default().insert(Rule::Within);
        }
    }
    let counted = [
        (Rule::Last, rules.last),
        (Rule::Hourly, rules.hourly),
        (Rule::Daily, rules.daily),
        (Rule::Weekly, rules.weekly),
        (Rule::Monthly, rules.monthly),
        (Rule::Yearly, rules.yearly),
    ];
    for (rule, count) in counted {
        let n = count.unwrap_or(0) as usize;
        if n == 0 {
            continue;
        }
        // The newest point of each bucket, buckets newest first.
        let mut firsts: Vec<(Bucket, &PointTime)> = Vec::new();
        for (position, p) in sorted.iter().enumerate() {
            let b = bucket(rule, p.created.with_timezone(&tz).naive_local(), position);
            if firsts.last().is_none_or(|(last, _)| *last != b) {
                firsts.push((b, p));
            }
        }
        for (_, p) in firsts.iter().take(n) {
            kept.entry(p.id.clone()).or_default().insert(rule);
        }
        if firsts.len() < n {
            let oldest = sorted.last().unwrap();
            kept.entry(oldest.id.clone()).or_default().insert(rule);
        }
    }
    kept
}

fn arb_tz() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
    ])
}

fn arb_times() -> impl Strategy<Value = Vec<PointTime>> {
    // Dense (hours, around a DST change), medium (months) and sparse
    // (years) sets, at minute resolution, with repeated times.
    let span = prop_oneof![
        Just(3 * 24 * 60i64),
        Just(90 * 24 * 60i64),
        Just(4 * 365 * 24 * 60i64),
    ];
    let start = prop_oneof![
        Just("2025-03-29T00:00:00Z"),
        Just("2025-10-25T00:00:00Z"),
        Just("2025-12-27T00:00:00Z"),
        Just("2024-01-01T00:00:00Z"),
    ];
    (span, start)
        .prop_flat_map(|(span, start)| {
            (
                Just(start),
                prop::collection::vec(prop_oneof![0..span, 0..(span / 50).max(2)], 0..40),
            )
        })
        .prop_map(|(start, minutes)| {
            let start: DateTime<Utc> = start.parse().unwrap();
            minutes
                .into_iter()
                .enumerate()
                .map(|(i, m)| PointTime {
                    id: format!("p{i}"),
                    created: start + TimeDelta::minutes(m),
                })
                .collect()
        })
}

fn arb_any_rules() -> impl Strategy<Value = Retention> {
    let count = proptest::option::of(0u32..8);
    (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
        proptest::option::of(prop_oneof![0u64..(3 * 86_400), 0u64..(400 * 86_400)]),
    )
        .prop_map(
            |(last, hourly, daily, weekly, monthly, yearly, within)| Retention {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within: within.map(Duration::from_secs),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn retention_matches_the_reference(
        points in arb_times(), rules in arb_any_rules(), tz in arb_tz()
    ) {
        let got: BTreeMap<String, BTreeSet<Rule>> = retention::apply(&points, &rules, tz)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| (v.id, v.reasons.iter().map(|r| r.rule).collect()))
            .collect();
        prop_assert_eq!(got, reference(&points, &rules, tz));
    }

    /// At the retention layer: whatever the rules keep includes the newest
    /// good point, so the planner's floor only matters for rules that keep
    /// nothing of a VM.
    #[test]
    fn retention_keeps_the_newest_point_whenever_it_keeps_anything(
        points in arb_times(), rules in arb_any_rules(), tz in arb_tz()
    ) {
        let v = retention::apply(&points, &rules, tz);
        if v.iter().any(|v| v.keep) {
            let newest = points.iter().map(|p| p.created).max().unwrap();
            prop_assert!(v.iter().any(|x| x.keep && x.created == newest));
        }
    }
}
