//! How the planner scales: synthetic sites of N VMs with 100 restore points
//! each, spread over a year, with copies on one to three of three tiers and
//! the retention a site would use. Each size runs in a child process of its
//! own, so its peak RSS (`getrusage` maxrss) is its own; the time is the best
//! of three `plan()` calls on the same input.
//!
//! `cargo bench --bench plan` prints the table; `COFFER_BENCH_PLAN_SIZES=100,200`
//! picks other sizes, `COFFER_BENCH_PLAN_SHOW=1` counts the actions by kind
//! on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use coffer::plan::planner::{
    Copies, CopyInfo, DrillRecord, PlanInput, PointConsistency, PointDisk, PointInfo, plan,
    restic_retention,
};
use coffer::policy::Config;
use coffer::repo::manifest::PointKind;
use coffer::vsphere::types::{ChangeId, DiskBacking, MoRef, SnapshotNode, VmDisk, VmRecord};

const POINTS_PER_VM: usize = 100;
const CHILD_ENV: &str = "COFFER_BENCH_PLAN_VMS";

/// The site's policies, with a verify drill of every VM.
const POLICIES: &str = concat!(
    include_str!("site.toml"),
    r#"
[[policies.nightly.drills]]
kind = "verify"
every = "7d"
tier = "offsite"
"#
);

fn main() {
    if let Ok(vms) = std::env::var(CHILD_ENV) {
        measure(vms.parse().expect("a VM count"));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // file too, unoptimised: there it is only a smoke test of one size.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("COFFER_BENCH_PLAN_SIZES")
        .unwrap_or_else(|_| {
            if full {
                "1000,2500,5000,10000".into()
            } else {
                "200".into()
            }
        })
        .split(',')
        .map(|s| s.trim().parse().expect("a VM count"))
        .collect();
    let exe = std::env::current_exe().expect("the bench's own path");
    println!(
        "{:>7} {:>9} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7}",
        "VMs", "points", "seconds", "RSS MiB", "input MiB", "actions", "time ×", "RSS ×"
    );
    let mut previous: Option<(f64, f64)> = None;
    for vms in sizes {
        let out = Command::new(&exe)
            .env(CHILD_ENV, vms.to_string())
            .output()
            .expect("running the bench child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).expect("UTF-8");
        let f: Vec<f64> = line
            .split_whitespace()
            .map(|x| x.parse().expect("a number"))
            .collect();
        let (points, seconds, rss_mib, input_mib, actions) = (f[0], f[1], f[2], f[3], f[4]);
        let growth = |now: f64, before: f64| format!("{:.2}", now / before);
        let (time_x, rss_x) = match previous {
            Some((t, r)) => (growth(seconds, t), growth(rss_mib, r)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{vms:>7} {points:>9} {seconds:>8.3} {rss_mib:>9.0} {input_mib:>9.0} {actions:>8} {time_x:>7} {rss_x:>7}"
        );
        previous = Some((seconds, rss_mib));
    }
}

/// In the child: build the site, plan it three times, print one line:
/// points, best seconds, peak RSS MiB, RSS MiB after building the input,
/// actions.
fn measure(vms: usize) {
    let config = config();
    let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
    let (inventory, points, drills) = site(vms, now);
    let input_mib = current_rss_mib();
    let input = PlanInput {
        config: &config,
        inventory,
        unreachable_sources: Default::default(),
        points: points.into(),
        unlisted_tiers: BTreeSet::new(),
        drills,
        dead_installation: None,
        now,
        allow_mass_prune: false,
    };
    let mut best = f64::MAX;
    let mut actions = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let p = plan(&input, &restic_retention);
        best = best.min(started.elapsed().as_secs_f64());
        actions = p.actions.len();
        if std::env::var_os("COFFER_BENCH_PLAN_SHOW").is_some() {
            // What the plan holds, by kind, on stderr.
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for a in &p.actions {
                let line = a.line();
                let kind = line
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                *kinds.entry(kind).or_default() += 1;
            }
            eprintln!("{kinds:?}");
        }
        drop(p);
    }
    println!(
        "{} {best} {} {input_mib} {actions}",
        input.points.len(),
        peak_rss_mib()
    );
}

fn config() -> Config {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("p.toml"), POLICIES).expect("writing the policy");
    let loaded = coffer::policy::load(dir.path());
    loaded
        .config
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
}

/// A small deterministic generator, so every run plans the same site.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

type Site = (Vec<(String, VmRecord)>, Vec<PointInfo>, Vec<DrillRecord>);

/// N VMs as nightly runs leave them: the newest 60 points a night apart, the
/// 40 before them about a week apart, reaching back a year; the newest 15 on
/// local, all on offsite, about one a month also on the archive, so that a
/// night's work is left (last night's point to copy, one to prune on local,
/// the archive's monthly point moving on). A few VMs missed last night, a
/// few copies failed verification, a few coffer snapshots were left behind.
fn site(vms: usize, now: DateTime<Utc>) -> Site {
    let mut rng = Lcg(42);
    // One name per tier, shared by every copy, as the catalog's reader does.
    let tier_names: BTreeMap<&str, Arc<str>> = ["local", "offsite", "archive"]
        .into_iter()
        .map(|t| (t, Arc::from(t)))
        .collect();
    let mut inventory = Vec::with_capacity(vms);
    let mut points = Vec::with_capacity(vms * POINTS_PER_VM);
    let mut drills = Vec::with_capacity(vms);
    let last_night = now - TimeDelta::hours(11);
    for i in 0..vms {
        let name = format!("vm{i:05}");
        let uuid = format!("5003{i:04x}-1c2d-4e5f-8a9b-{i:012x}");
        let (vm_uuid, vm_name): (Arc<str>, Arc<str>) = (uuid.as_str().into(), name.as_str().into());
        let missed_last_night = rng.below(50) == 0;
        let snapshots = if rng.below(100) == 0 {
            vec![SnapshotNode {
                snapshot: MoRef::new("VirtualMachineSnapshot", format!("snapshot-{i}")),
                name: "coffer-20261120T010000Z-ab12".into(),
                description: String::new(),
                create_time: now - TimeDelta::days(5),
                quiesced: true,
                children: vec![],
            }]
        } else {
            vec![]
        };
        inventory.push((
            "vc".to_string(),
            VmRecord {
                moref: MoRef::new("VirtualMachine", format!("vm-{i}")),
                name: name.clone(),
                instance_uuid: Some(uuid.clone()),
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
                    capacity_bytes: 40 << 30,
                    file_name: format!("[ds{}] {name}/{name}.vmdk", i % 8),
                    datastore: None,
                    change_id: Some(ChangeId(format!(
                        "52 3f 9a 1c 6e 0b 44 d2-8e 71 2a 5c 9f 03 b6 e4/{}",
                        900 + i
                    ))),
                    disk_mode: Some("persistent".into()),
                    backing: DiskBacking::Vmdk,
                    slot: None,
                }],
                snapshots,
            },
        ));
        drills.push(DrillRecord {
            policy: "nightly".into(),
            drill: "nightly-verify".into(),
            vm_uuid: uuid.clone(),
            point_id: String::new(),
            finished: now - TimeDelta::days(rng.below(10) as i64),
            ok: true,
            guest_ok: None,
            guest_detail: None,
        });
        for j in 0..POINTS_PER_VM {
            let skip = usize::from(missed_last_night);
            let age_days = if j < 60 {
                (j + skip) as f64
            } else {
                60.0 + (j - 60) as f64 * 7.6
            };
            let created = last_night - TimeDelta::minutes((age_days * 1440.0) as i64)
                + TimeDelta::seconds(rng.below(1800) as i64);
            let mut tiers = Vec::with_capacity(3);
            if j < 15 {
                tiers.push("local");
            }
            if j > 0 {
                tiers.push("offsite");
            }
            if j % 30 == 1 || (j >= 60 && j % 4 == 0) {
                tiers.push("archive");
            }
            let copies: Copies = tiers
                .into_iter()
                .map(|t| {
                    (
                        tier_names[t].clone(),
                        CopyInfo {
                            locked_until: None,
                            verified_ok: (rng.below(2000) == 0).then_some(false),
                        },
                    )
                })
                .collect();
            points.push(PointInfo {
                vm_uuid: vm_uuid.clone(),
                source: None,
                vm_name: vm_name.clone(),
                point_id: format!("{}-{i:05}", created.format("%Y%m%dT%H%M%SZ")),
                created,
                consistency: PointConsistency::Crash,
                kind: if j % 30 == 0 {
                    PointKind::Full
                } else {
                    PointKind::Incremental
                },
                disks: Box::new([PointDisk {
                    device_key: 2000,
                    size_bytes: 40 << 30,
                    change_id: Some(
                        format!(
                            "52 3f 9a 1c 6e 0b 44 d2-8e 71 2a 5c 9f 03 b6 e4/{}",
                            800 + i
                        )
                        .into(),
                    ),
                    backing: None,
                }]),
                copies,
            });
        }
    }
    (inventory, points, drills)
}

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    // Linux reports maxrss in KiB.
    usage.ru_maxrss as f64 / 1024.0
}

fn current_rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1 << 20) as f64
}
