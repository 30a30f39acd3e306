//! The planner over synthetic inventories and catalogs, with a fixed clock.
//! VMs are built by hand in the neutral model of `crate::inventory`; these
//! tests never talk to a host or read the clock.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::planner::*;
use crate::inventory::{ChangeId, DiskBacking, MoRef, VmDisk, VmRecord};
use crate::policy::Config;
use crate::repo::manifest::PointKind;

const POLICIES: &str = r#"
[settings]
timezone = "UTC"

[sources.esx]
kind = "esxi"
url = "https://esx.example.com"
user = "u"
password = { env = "X" }
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

[policies.nightly.retain.local]
last = 2

[policies.nightly.retain.offsite]
daily = 3

[[policies.nightly.drills]]
kind = "verify"
every = "7d"
tier = "offsite"
"#;

fn config(extra: &str) -> Config {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.toml"), format!("{POLICIES}{extra}")).unwrap();
    let loaded = crate::policy::load(t.path());
    loaded
        .config
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn vm(name: &str) -> VmRecord {
    VmRecord {
        moref: MoRef::new("VirtualMachine", name),
        name: name.into(),
        instance_uuid: Some(format!("uuid-{name}")),
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
        snapshots: vec![],
    }
}

fn point(vm: &str, created: &str, kind: PointKind, tiers: &[&str]) -> PointInfo {
    PointInfo {
        vm_uuid: format!("uuid-{vm}").into(),
        source: None,
        vm_name: vm.into(),
        point_id: format!("{}-{vm}", created.replace([':', '-'], "")),
        created: at(created),
        kind,
        consistency: PointConsistency::Crash,
        disks: Box::new([PointDisk {
            device_key: 2000,
            size_bytes: 1 << 30,
            change_id: Some("52 aa/3".into()),
            backing: None,
        }]),
        copies: tiers
            .iter()
            .map(|t| (t.to_string(), CopyInfo::default()))
            .collect(),
    }
}

fn input<'a>(
    config: &'a Config,
    vms: Vec<VmRecord>,
    points: Vec<PointInfo>,
    now: &str,
) -> PlanInput<'a> {
    PlanInput {
        config,
        inventory: vms.into_iter().map(|v| ("esx".to_string(), v)).collect(),
        unreachable_sources: Default::default(),
        points: points.into(),
        unlisted_tiers: BTreeSet::new(),
        drills: vec![],
        dead_installation: None,
        now: at(now),
        allow_mass_prune: false,
    }
}

fn lines(p: &Plan) -> Vec<String> {
    p.actions.iter().map(Action::line).collect()
}

#[test]
fn a_vm_without_points_gets_a_full_and_one_without_a_policy_an_alert() {
    let c = config("");
    let p = plan(
        &input(
            &c,
            vec![vm("db01"), vm("web01")],
            vec![],
            "2026-11-25T02:00:00Z",
        ),
        &restic_retention,
    );
    assert_eq!(
        lines(&p),
        [
            "+ backup db01 → local (full, policy nightly): no restore point yet; full: first backup",
            "! alert web01: no policy selects this VM: it is not backed up",
        ]
    );
    assert_eq!(p.compliance[0].violations[0], "1 copies of 3 required");
}

#[test]
fn backups_follow_the_schedule_and_cbt_decides_full_or_incremental() {
    let c = config("");
    let after_fire = point("db01", "2026-11-25T01:00:05Z", PointKind::Full, &["local"]);
    let before_fire = point("db01", "2026-11-24T01:00:05Z", PointKind::Full, &["local"]);
    // Backed up since the last fire time: nothing due.
    let p = plan(
        &input(
            &c,
            vec![vm("db01")],
            vec![after_fire.clone()],
            "2026-11-25T12:00:00Z",
        ),
        &restic_retention,
    );
    assert!(
        !lines(&p).iter().any(|l| l.starts_with("+ backup")),
        "{:?}",
        lines(&p)
    );
    // A fire time passed since: an incremental from that point.
    let p = plan(
        &input(
            &c,
            vec![vm("db01")],
            vec![before_fire.clone()],
            "2026-11-25T01:30:00Z",
        ),
        &restic_retention,
    );
    assert!(lines(&p).contains(&format!(
        "+ backup db01 → local (incremental, policy nightly): scheduled at 2026-11-25 01:00 +00:00; incremental from {}",
        before_fire.point_id
    )), "{:?}", lines(&p));
    let mut resized = vm("db01");
    resized.disks[0].capacity_bytes = 2 << 30;
    let p = plan(
        &input(
            &c,
            vec![resized],
            vec![before_fire.clone()],
            "2026-11-25T01:30:00Z",
        ),
        &restic_retention,
    );
    // The disk was resized: change tracking is reset first, then a full,
    // each saying why.
    assert!(
        lines(&p)[0].starts_with("~ reset-cbt db01: disk 2000 resized"),
        "{:?}",
        lines(&p)
    );
    assert!(
        lines(&p)[1].contains("full: disk resized"),
        "{:?}",
        lines(&p)
    );
    // CBT reset (a new change-id epoch): a full.
    let mut reset = vm("db01");
    reset.disks[0].change_id = Some(ChangeId("52 bb/1".into()));
    let p = plan(
        &input(
            &c,
            vec![reset],
            vec![before_fire.clone()],
            "2026-11-25T01:30:00Z",
        ),
        &restic_retention,
    );
    assert!(
        lines(&p)[0].contains("full: the change-id chain was reset"),
        "{:?}",
        lines(&p)
    );
    // full_every reached.
    let old_full = point("db01", "2026-10-01T01:00:00Z", PointKind::Full, &["local"]);
    let mut recent = point(
        "db01",
        "2026-11-24T01:00:05Z",
        PointKind::Incremental,
        &["local"],
    );
    recent.point_id = "recent".into();
    let p = plan(
        &input(
            &c,
            vec![vm("db01")],
            vec![old_full, recent],
            "2026-11-25T01:30:00Z",
        ),
        &restic_retention,
    );
    assert!(
        lines(&p)[0].contains("full: full_every 30d reached"),
        "{:?}",
        lines(&p)
    );
    // The newest point failed verification: a full, saying so.
    let mut bad = point(
        "db01",
        "2026-11-24T13:00:00Z",
        PointKind::Incremental,
        &["local"],
    );
    bad.copies.get_mut("local").unwrap().verified_ok = Some(false);
    let p = plan(
        &input(
            &c,
            vec![vm("db01")],
            vec![before_fire.clone(), bad],
            "2026-11-25T01:30:00Z",
        ),
        &restic_retention,
    );
    assert!(
        lines(&p)[0].contains("full: the newest point failed data verification"),
        "{:?}",
        lines(&p)
    );
    // RPO breached reads as such.
    let stale = point("db01", "2026-11-20T01:00:00Z", PointKind::Full, &["local"]);
    let p = plan(
        &input(&c, vec![vm("db01")], vec![stale], "2026-11-25T00:30:00Z"),
        &restic_retention,
    );
    assert!(
        lines(&p)[0].contains("RPO 1d2h breached"),
        "{:?}",
        lines(&p)
    );
}

#[test]
fn a_closed_window_makes_the_backup_wait_until_it_opens() {
    // The window key belongs to the policy: rebuild with it in place.
    let c2 = {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("p.toml"),
            POLICIES.replace(
                "full_every = \"30d\"",
                "full_every = \"30d\"\nwindow = \"22:00-06:00\"",
            ),
        )
        .unwrap();
        crate::policy::load(t.path()).config.unwrap()
    };
    let p = plan(
        &input(&c2, vec![vm("db01")], vec![], "2026-11-25T12:00:00Z"),
        &restic_retention,
    );
    assert_eq!(
        lines(&p)[0],
        "… wait db01 until 2026-11-25 22:00 +00:00: no restore point yet; outside the backup window"
    );
}

fn nightly(days: &[u32], tiers: &[&str]) -> Vec<PointInfo> {
    days.iter()
        .map(|d| {
            point(
                "db01",
                &format!("2026-11-{d:02}T01:00:05Z"),
                PointKind::Incremental,
                tiers,
            )
        })
        .collect()
}

#[test]
fn retention_copies_what_a_tier_keeps_and_prunes_the_rest_with_floors() {
    let c = config("");
    // Four nightly points on local; local keeps the last 2, offsite the
    // last 3 days.
    let points = nightly(&[21, 22, 23, 24], &["local"]);
    let mut i = input(&c, vec![vm("db01")], points.clone(), "2026-11-24T12:00:00Z");
    let p = plan(&i, &restic_retention);
    let l = lines(&p);
    let copies: Vec<_> = l.iter().filter(|l| l.starts_with("> copy")).collect();
    assert_eq!(copies.len(), 3, "{l:?}");
    assert!(
        copies[0].contains("local → offsite: kept by daily"),
        "{l:?}"
    );
    // Pruning 2 of 4 is not more than half: allowed, then gc.
    let prunes: Vec<_> = l.iter().filter(|l| l.starts_with("- prune")).collect();
    assert_eq!(prunes.len(), 1, "{l:?}"); // 22nd is the only source of a pending copy
    assert!(
        l.iter().any(|l| l.starts_with(
            "= keep db01 20261122T010005Z-db01 on local: the only source of a pending copy"
        )),
        "{l:?}"
    );
    assert!(
        l.iter().any(|l| l == "- gc local: points were pruned"),
        "{l:?}"
    );

    // Once copied, both go; the newest good point never goes.
    let copied = nightly(&[21, 22, 23, 24], &["local", "offsite"]);
    i.points = copied.into();
    let l = lines(&plan(&i, &restic_retention));
    assert!(l.iter().any(|x| x == "- prune db01 20261122T010005Z-db01 on local: no retention rule keeps it"), "{l:?}");
    assert!(
        l.iter()
            .any(|x| x
                == "- prune db01 20261121T010005Z-db01 on offsite: no retention rule keeps it"),
        "{l:?}"
    );

    // A locked copy is kept with the lock's date.
    let mut locked = nightly(&[21, 22, 23, 24], &["local", "offsite"]);
    locked[0].copies.get_mut("offsite").unwrap().locked_until = Some(at("2026-12-21T00:00:00Z"));
    i.points = locked.into();
    let l = lines(&plan(&i, &restic_retention));
    assert!(l.iter().any(|x| x == "= keep db01 20261121T010005Z-db01 on offsite: locked (immutable) until 2026-12-21 00:00 +00:00"), "{l:?}");

    // A tier whose listing failed prunes nothing.
    i.points = nightly(&[21, 22, 23, 24], &["local", "offsite"]).into();
    i.unlisted_tiers = BTreeSet::from(["local".to_string()]);
    let l = lines(&plan(&i, &restic_retention));
    assert!(
        !l.iter()
            .any(|x| x.starts_with("- prune") && x.contains("on local")),
        "{l:?}"
    );
}

#[test]
fn the_mass_prune_floor_prunes_the_oldest_half_and_says_how_many_wait() {
    let c = config("");
    let points = nightly(&[18, 19, 20, 21, 22, 23, 24], &["local", "offsite"]);
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    let l = lines(&plan(&i, &restic_retention));
    // Retention asks for 5 of 7 on local: the floor lets 3 go, oldest first.
    let pruned: Vec<_> = l
        .iter()
        .filter(|x| x.starts_with("- prune") && x.contains("on local"))
        .collect();
    assert_eq!(pruned.len(), 3, "{l:?}");
    for day in [18, 19, 20] {
        assert!(
            pruned
                .iter()
                .any(|x| x.contains(&format!("202611{day}T010005Z"))),
            "{l:?}"
        );
    }
    assert!(
        l.iter().any(|x| x.starts_with(
            "= keep db01 20261122T010005Z-db01 on local: the mass-prune floor defers it"
        )),
        "{l:?}"
    );
    assert!(
        l.iter().any(|x| x
            .starts_with("! alert: tier `local`: retention would prune 5 of its 7 points")
            && x.contains("2 remain for the next runs")),
        "{l:?}"
    );
    i.allow_mass_prune = true;
    let l = lines(&plan(&i, &restic_retention));
    assert_eq!(
        l.iter()
            .filter(|x| x.starts_with("- prune") && x.contains("on local"))
            .count(),
        5,
        "{l:?}"
    );
    assert!(!l.iter().any(|x| x.contains("mass-prune")), "{l:?}");
}

/// Carries out a plan's copies and prunes on the points, as a run would.
fn carry_out_copies_and_prunes(points: &mut Vec<PointInfo>, p: &Plan) {
    for a in &p.actions {
        match a {
            Action::Copy { point, to, .. } => {
                let q = points.iter_mut().find(|q| &q.point_id == point).unwrap();
                q.copies.insert(to.as_str(), CopyInfo::default());
            }
            Action::Prune { point, tier, .. } => {
                let q = points.iter_mut().find(|q| &q.point_id == point).unwrap();
                q.copies.remove(tier);
            }
            _ => {}
        }
    }
    points.retain(|q| !q.copies.is_empty());
}

#[test]
fn a_prune_backlog_shrinks_every_run_until_the_tier_holds_what_retention_keeps() {
    let c = config("");
    // 20 points on `last = 2`, as runs killed before their prune phase
    // leave them; offsite already holds what its retention keeps.
    let days: Vec<u32> = (5..=24).collect();
    let mut points = nightly(&days, &["local"]);
    for q in &mut points {
        if q.created >= at("2026-11-22T00:00:00Z") {
            q.copies.insert("offsite", CopyInfo::default());
        }
    }
    let on_local = |points: &[PointInfo]| {
        points
            .iter()
            .filter(|q| q.copies.contains_key("local"))
            .count()
    };
    let mut runs = 0;
    while on_local(&points) > 2 {
        runs += 1;
        assert!(
            runs <= 6,
            "the backlog does not shrink: {} left",
            on_local(&points)
        );
        let before = on_local(&points);
        let p = plan(
            &input(&c, vec![vm("db01")], points.clone(), "2026-11-24T12:00:00Z"),
            &restic_retention,
        );
        let l = lines(&p);
        let remaining_alert = l.iter().any(|x| {
            x.starts_with("! alert: tier `local`") && x.contains("remain for the next runs")
        });
        carry_out_copies_and_prunes(&mut points, &p);
        let after = on_local(&points);
        assert!(after < before, "run {runs} pruned nothing on local: {l:?}");
        // A run that leaves a backlog says so.
        assert_eq!(remaining_alert, after > 2, "run {runs}: {l:?}");
        // Never the newest point.
        assert!(
            points
                .iter()
                .any(|q| q.point_id == "20261124T010005Z-db01" && q.copies.contains_key("local")),
            "run {runs}: {l:?}"
        );
    }
    let left: Vec<&str> = points
        .iter()
        .filter(|q| q.copies.contains_key("local"))
        .map(|q| q.point_id.as_str())
        .collect();
    assert_eq!(
        left,
        ["20261123T010005Z-db01", "20261124T010005Z-db01"],
        "after {runs} runs"
    );
    assert!(
        runs >= 3,
        "a 20-point backlog took {runs} runs: the floor did not hold"
    );
}

#[test]
fn drills_are_due_by_every_and_name_their_point() {
    let c = config("");
    let points = nightly(&[23, 24], &["local", "offsite"]);
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    let l = lines(&plan(&i, &restic_retention));
    assert!(
        l.iter()
            .any(|x| x == "? drill nightly-verify db01 20261124T010005Z-db01 on offsite: never run"),
        "{l:?}"
    );
    i.drills = vec![DrillRecord {
        policy: "nightly".into(),
        drill: "nightly-verify".into(),
        vm_uuid: "uuid-db01".into(),
        point_id: "20261124T010005Z-db01".into(),
        finished: at("2026-11-20T00:00:00Z"),
        ok: true,
        guest_ok: None,
        guest_detail: None,
    }];
    let l = lines(&plan(&i, &restic_retention));
    assert!(!l.iter().any(|x| x.starts_with("? drill")), "{l:?}");
}

#[test]
fn compliance_counts_copies_media_sites_and_the_rpo() {
    let c = config("");
    let points = nightly(&[24], &["local", "offsite"]);
    let p = plan(
        &input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z"),
        &restic_retention,
    );
    let v = &p.compliance[0];
    assert_eq!((v.copies, v.media, v.offsite, v.immutable), (3, 1, 1, 0));
    assert_eq!(v.rpo_met, Some(true));
    assert_eq!(
        v.violations,
        ["1 media of 2 required", "0 immutable copies of 1 required"]
    );
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let c = config("");
    let points = nightly(&[18, 19, 20, 21, 22, 23, 24], &["local"]);
    let i = input(
        &c,
        vec![vm("db02"), vm("db01"), vm("web01")],
        points,
        "2026-11-25T02:00:00Z",
    );
    let a = serde_json::to_string(&plan(&i, &restic_retention)).unwrap();
    let b = serde_json::to_string(&plan(&i, &restic_retention)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_copy_that_failed_verification_is_pruned_alone_and_copied_again() {
    // The offsite copy of the newest point failed verification; its local
    // copy is healthy and must stay (it once took the local copy with it).
    let c = config("");
    let mut points = nightly(&[23, 24], &["local", "offsite"]);
    points[1].copies.get_mut("offsite").unwrap().verified_ok = Some(false);
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    i.allow_mass_prune = true;
    let l = lines(&plan(&i, &restic_retention));
    let prunes: Vec<_> = l.iter().filter(|x| x.starts_with("- prune")).collect();
    assert_eq!(
        prunes,
        ["- prune db01 20261124T010005Z-db01 on offsite: the copy failed data verification"],
        "{l:?}"
    );
    // Once the damaged copy is gone, the point is copied there again.
    i.points.to_mut()[1].copies.remove("offsite");
    let l = lines(&plan(&i, &restic_retention));
    assert!(
        l.iter()
            .any(|x| x
                == "> copy db01 20261124T010005Z-db01 local → offsite: kept by daily 2026-11-24"),
        "{l:?}"
    );
    assert!(!l.iter().any(|x| x.starts_with("- prune")), "{l:?}");
}

#[test]
fn the_backup_tier_keeps_a_healthy_base_while_a_damaged_copy_waits_for_repair() {
    // local keeps the last 2 points; their local copies are damaged.
    // Pruning the older healthy local point too would leave the next backup
    // no base.
    let c = config("");
    let mut points = nightly(&[22, 23, 24], &["local", "offsite"]);
    for p in &mut points[1..] {
        p.copies.get_mut("local").unwrap().verified_ok = Some(false);
    }
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    i.allow_mass_prune = true;
    let l = lines(&plan(&i, &restic_retention));
    assert!(
        l.iter().any(|x| x
            == "- prune db01 20261124T010005Z-db01 on local: the copy failed data verification"),
        "{l:?}"
    );
    assert!(
        l.iter().any(|x| x
            == "= keep db01 20261122T010005Z-db01 on local: the base of the next incremental backup"),
        "{l:?}"
    );
}

#[test]
fn the_only_copy_of_a_damaged_point_stays_until_retention_passes_it() {
    // local keeps the last 2 good points. The point of the 23rd failed
    // verification on local, its only copy: no healthy copy to copy it
    // again from, so what it still restores is all there is of it.
    let c = config("");
    let mut points = nightly(&[22, 23, 24], &["local"]);
    points[1].copies.get_mut("local").unwrap().verified_ok = Some(false);
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    i.allow_mass_prune = true;
    let l = lines(&plan(&i, &restic_retention));
    assert!(!l.iter().any(|x| x.starts_with("- prune")), "{l:?}");
    assert!(
        l.iter()
            .any(|x| x
                == &format!("= keep db01 20261123T010005Z-db01 on local: {ONLY_DAMAGED_COPIES}")),
        "{l:?}"
    );
    // Once retention keeps only newer points, it goes.
    let mut points = nightly(&[20, 23, 24], &["local"]);
    points[0].copies.get_mut("local").unwrap().verified_ok = Some(false);
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-24T12:00:00Z");
    i.allow_mass_prune = true;
    let l = lines(&plan(&i, &restic_retention));
    assert!(
        l.iter().any(|x| x
            == "- prune db01 20261120T010005Z-db01 on local: the copy failed data verification"),
        "{l:?}"
    );
}

#[test]
fn a_failed_guest_check_is_an_alert_and_a_finding_never_a_prune_or_a_full() {
    let c = config(
        r#"
[[policies.nightly.drills]]
name = "fsck"
kind = "restore"
every = "7d"
tier = "local"
fsck = "e2fsck -fn {image}"
"#,
    );
    // Two points on `last = 2`, both copied offsite: nothing to do but
    // the nightly backup, an incremental from the newest point.
    let mut points = nightly(&[23, 24], &["local", "offsite"]);
    points[0].kind = PointKind::Full;
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-25T02:00:00Z");
    let before = lines(&plan(&i, &restic_retention));
    // The restore drill proved every chunk of the newest point, then its
    // file system check failed.
    i.drills = vec![DrillRecord {
        policy: "nightly".into(),
        drill: "fsck".into(),
        vm_uuid: "uuid-db01".into(),
        point_id: "20261124T010005Z-db01".into(),
        finished: at("2026-11-24T03:00:00Z"),
        ok: false,
        guest_ok: Some(false),
        guest_detail: Some(
            "`e2fsck -fn x` failed (exit status: 8); its output: Bad magic number in super-block"
                .into(),
        ),
    }];
    let p = plan(&i, &restic_retention);
    let l = lines(&p);
    assert!(!l.iter().any(|x| x.starts_with("- prune")), "{l:?}");
    assert!(
        l.iter().any(|x| x
            == "+ backup db01 → local (incremental, policy nightly): scheduled at 2026-11-25 01:00 +00:00; incremental from 20261124T010005Z-db01"),
        "{l:?}"
    );
    let alert = l
        .iter()
        .find(|x| {
            x.starts_with(
                "! alert db01: guest check of drill `fsck` failed on point 20261124T010005Z-db01",
            )
        })
        .unwrap_or_else(|| panic!("no alert: {l:?}"));
    assert!(alert.contains("Bad magic number in super-block"), "{alert}");
    // Everything but the alert is what it was without the failed check.
    // (The drill itself is not due again before its `every`.)
    let without_alert: Vec<_> = l
        .iter()
        .filter(|x| !x.starts_with("! alert") && !x.starts_with("? drill fsck"))
        .cloned()
        .collect();
    let before_without_alert: Vec<_> = before
        .iter()
        .filter(|x| !x.starts_with("! alert") && !x.starts_with("? drill fsck"))
        .cloned()
        .collect();
    assert_eq!(without_alert, before_without_alert);
    assert!(!l.iter().any(|x| x.starts_with("? drill fsck")), "{l:?}");
    let v = &p.compliance[0];
    assert_eq!((v.verify_errors, v.guest_check_failures), (0, 1));
    assert!(
        v.violations
            .iter()
            .any(|x| x == "guest check of drill `fsck` failed"),
        "{:?}",
        v.violations
    );
    assert_eq!(v.newest_good, Some(at("2026-11-24T01:00:05Z")));
    // The drill passes again: the finding is gone.
    i.drills.push(DrillRecord {
        finished: at("2026-11-24T04:00:00Z"),
        ok: true,
        guest_ok: Some(true),
        guest_detail: None,
        ..i.drills[0].clone()
    });
    let p = plan(&i, &restic_retention);
    assert!(!lines(&p).iter().any(|x| x.contains("guest check")));
    assert_eq!(p.compliance[0].guest_check_failures, 0);
}

/// A second host with its own policy, for the tests of VM identity and
/// visibility across sources.
const SECOND_SOURCE: &str = r#"
[sources.esx2]
kind = "esxi"
url = "https://esx2.example.com"
user = "u"
password = { env = "X" }
site = "dc1"

[policies.second]
sources = ["esx2"]
vms = ["app*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.second.retain.local]
last = 1
"#;

fn from_source(mut p: PointInfo, source: &str) -> PointInfo {
    p.source = Some(source.into());
    p
}

#[test]
fn a_vm_whose_source_cannot_be_read_is_unknown_and_nothing_of_it_is_pruned() {
    let c = config(SECOND_SOURCE);
    // app01 of esx2: six points, where `last = 1` keeps one.
    let points: Vec<PointInfo> = (1..=6)
        .map(|d| {
            from_source(
                point(
                    "app01",
                    &format!("2026-11-{:02}T01:00:05Z", 18 + d),
                    PointKind::Full,
                    &["local"],
                ),
                "esx2",
            )
        })
        .collect();
    let mut i = input(&c, vec![vm("db01")], points, "2026-11-25T02:00:00Z");
    i.unreachable_sources
        .insert("esx2".into(), "connection refused".into());
    let p = plan(&i, &restic_retention);
    let unknown = p
        .compliance
        .iter()
        .find(|c| c.vm == "app01")
        .unwrap_or_else(|| panic!("app01 vanished from compliance: {:?}", p.compliance));
    assert_eq!(unknown.standing, super::compliance::Standing::Unknown);
    assert_eq!(unknown.source.as_deref(), Some("esx2"));
    assert_eq!(unknown.policy, "second");
    assert_eq!(unknown.source_error.as_deref(), Some("connection refused"));
    assert!(
        unknown.violations[0].contains("source `esx2` could not be read: connection refused")
            && unknown.violations[0].contains("newest point 1d59m55s old"),
        "{:?}",
        unknown.violations
    );
    let l = lines(&p);
    assert!(
        l.iter()
            .any(|l| l
                .starts_with("! alert app01: standing unknown, source `esx2` could not be read")),
        "{l:?}"
    );
    assert!(
        !l.iter()
            .any(|l| l.contains("app01") && l.starts_with("- prune")),
        "{l:?}"
    );
}

#[test]
fn an_unreachable_source_never_silences_vm_gone_alerts_of_another() {
    let c = config(SECOND_SOURCE);
    // db02 was backed up from esx, which answers and no longer has it.
    let gone = from_source(
        point("db02", "2026-11-24T01:00:05Z", PointKind::Full, &["local"]),
        "esx",
    );
    let mut i = input(&c, vec![vm("db01")], vec![gone], "2026-11-25T02:00:00Z");
    i.unreachable_sources
        .insert("esx2".into(), "connection refused".into());
    let p = plan(&i, &restic_retention);
    assert!(
        lines(&p).contains(
            &"! alert db02: the VM is gone from source `esx`; its 1 points are kept until pruned by hand"
                .to_string()
        ),
        "{:?}",
        lines(&p)
    );
}

#[test]
fn vms_with_one_instance_uuid_on_two_sources_never_share_points() {
    let c = config(SECOND_SOURCE);
    // app01 on esx2 is a copy of db01 on esx: the same instance UUID.
    let mut copy = vm("app01");
    copy.instance_uuid = Some("uuid-db01".into());
    let backed_up = from_source(
        point("db01", "2026-11-25T01:00:05Z", PointKind::Full, &["local"]),
        "esx",
    );
    let mut i = input(
        &c,
        vec![vm("db01")],
        vec![backed_up],
        "2026-11-25T02:00:00Z",
    );
    i.inventory.push(("esx2".into(), copy));
    let p = plan(&i, &restic_retention);
    let l = lines(&p);
    assert!(
        l.contains(
            &"+ backup app01 → local (full, policy second): no restore point yet; full: first backup"
                .to_string()
        ),
        "{l:?}"
    );
    assert!(!l.iter().any(|l| l.starts_with("+ backup db01")), "{l:?}");
    assert!(
        l.iter().any(|l| l.starts_with("! alert: instance UUID uuid-db01 is held by VM db01 of source `esx` and VM app01 of source `esx2`")),
        "{l:?}"
    );
    let app = p.compliance.iter().find(|c| c.vm == "app01").unwrap();
    assert_eq!(app.newest_good, None, "{app:?}");
}

#[test]
fn points_without_a_source_count_for_the_one_vm_of_their_uuid_and_never_for_two() {
    let c = config(SECOND_SOURCE);
    // Written before manifests recorded the source.
    let old = point("db01", "2026-11-25T01:00:05Z", PointKind::Full, &["local"]);
    let i = input(
        &c,
        vec![vm("db01")],
        vec![old.clone()],
        "2026-11-25T02:00:00Z",
    );
    let p = plan(&i, &restic_retention);
    assert!(
        !lines(&p).iter().any(|l| l.starts_with("+ backup")),
        "{:?}",
        lines(&p)
    );
    assert!(p.compliance[0].newest_good.is_some());
    // A VM of another source with the same UUID: the old point cannot say
    // whose it is, so it protects neither (and is pruned by neither).
    let mut copy = vm("app01");
    copy.instance_uuid = Some("uuid-db01".into());
    let mut i = input(&c, vec![vm("db01")], vec![old], "2026-11-25T02:00:00Z");
    i.inventory.push(("esx2".into(), copy));
    let p = plan(&i, &restic_retention);
    let l = lines(&p);
    assert!(
        l.iter().any(|l| l.starts_with("+ backup db01"))
            && l.iter().any(|l| l.starts_with("+ backup app01")),
        "{l:?}"
    );
    assert!(
        l.iter().any(
            |l| l.ends_with("1 older points that do not record their source count for neither")
        ),
        "{l:?}"
    );
    assert!(!l.iter().any(|l| l.starts_with("- prune")), "{l:?}");
}

#[test]
fn an_unseen_vm_whose_points_predate_sources_is_unknown_while_any_source_is_unreadable() {
    let c = config(SECOND_SOURCE);
    let old = point("app07", "2026-11-24T01:00:05Z", PointKind::Full, &["local"]);
    let mut i = input(&c, vec![vm("db01")], vec![old], "2026-11-25T02:00:00Z");
    i.unreachable_sources
        .insert("esx2".into(), "certificate changed".into());
    let p = plan(&i, &restic_retention);
    let app = p
        .compliance
        .iter()
        .find(|c| c.vm == "app07")
        .unwrap_or_else(|| panic!("{:?}", p.compliance));
    assert_eq!(app.standing, super::compliance::Standing::Unknown);
    assert_eq!(app.source, None);
    assert!(
        app.violations[0].contains("source `esx2` could not be read: certificate changed"),
        "{:?}",
        app.violations
    );
    assert!(
        !lines(&p).iter().any(|l| l.contains("gone")),
        "{:?}",
        lines(&p)
    );
}

#[test]
fn disks_that_need_consolidation_are_an_alert_in_every_plan_and_consolidated_when_protected() {
    let c = config("");
    let mut db = vm("db01");
    db.consolidation_needed = true;
    let mut web = vm("web01");
    web.consolidation_needed = true;
    // db01 was backed up since the last fire time: no backup is due, the
    // consolidation is still planned.
    let recent = point("db01", "2026-11-25T01:00:05Z", PointKind::Full, &["local"]);
    let p = plan(
        &input(&c, vec![db, web], vec![recent], "2026-11-25T12:00:00Z"),
        &restic_retention,
    );
    let l = lines(&p);
    assert!(
        l.iter()
            .any(|l| l.starts_with("! alert db01: its disks need consolidation")),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|l| l.starts_with("~ consolidate db01: a snapshot removal left")),
        "{l:?}"
    );
    // web01 is no policy's: told about, left to its owner.
    assert!(
        l.iter()
            .any(|l| l.starts_with("! alert web01: its disks need consolidation")),
        "{l:?}"
    );
    assert!(
        !l.iter().any(|l| l.starts_with("~ consolidate web01")),
        "{l:?}"
    );
}

#[test]
fn a_newest_point_weaker_than_the_application_consistency_asked_is_alerted_until_one_is_not() {
    use crate::policy::model::Consistency;
    let mut c = config("");
    c.policies.get_mut("nightly").unwrap().consistency = Consistency::ApplicationPreferred;
    let mut fs = point("db01", "2026-11-25T01:00:05Z", PointKind::Full, &["local"]);
    fs.consistency = PointConsistency::Filesystem;
    let now = "2026-11-25T12:00:00Z";
    let alerted = |c: &Config, points: Vec<PointInfo>| {
        let p = plan(&input(c, vec![vm("db01")], points, now), &restic_retention);
        lines(&p)
            .into_iter()
            .filter(|l| l.starts_with("! alert db01: its newest point"))
            .collect::<Vec<_>>()
    };
    let said = alerted(&c, vec![fs.clone()]);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("is filesystem-consistent, and policy `nightly` prefers application"),
        "{said:?}"
    );
    // A newer application-consistent point ends it.
    let mut app = point("db01", "2026-11-25T06:00:05Z", PointKind::Full, &["local"]);
    app.consistency = PointConsistency::Application;
    assert!(alerted(&c, vec![app, fs.clone()]).is_empty());
    // A policy content with file-system consistency says nothing.
    c.policies.get_mut("nightly").unwrap().consistency = Consistency::Filesystem;
    assert!(alerted(&c, vec![fs]).is_empty());
}

#[test]
fn an_encrypted_vm_gets_no_backup_only_its_reason_and_stays_in_compliance() {
    let c = config("");
    let mut db = vm("db01");
    db.encryption_key = Some("k1@kms".into());
    let p = plan(
        &input(&c, vec![db], vec![], "2026-11-25T02:00:00Z"),
        &restic_retention,
    );
    assert_eq!(
        lines(&p),
        [
            "! alert db01: the VM is encrypted (config.keyId k1@kms): its disks would be read as \
             ciphertext that cannot be restored without that key; it is not backed up",
        ]
    );
    assert_eq!(p.compliance.len(), 1);
    assert!(!p.compliance[0].violations.is_empty());
}
