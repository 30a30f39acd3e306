//! The torture test: deterministic simulation in the style of FoundationDB's
//! and TigerBeetle's, against the real binary, the built-in lab and three
//! tiers (a local directory, S3 on moto, and a tape pool in an emulated
//! library).
//!
//! A seed drives a random sequence of operations: guest writes, `backup`,
//! `apply` (copies to S3 and tape, retention prunes, gc, verify drills), `repo gc`,
//! `repo verify`, kill -9 of a backup or an apply at a random moment, a
//! corrupted or deleted chunk, a deleted index, a host that stops answering
//! (its VMs must be `unknown`, a breach, and keep every point), and a second
//! coffer installation backing up the same lab while the first is reading. After
//! every step an oracle checks DESIGN §10:
//!
//! - every point coffer committed restores to exactly the disk as it was at
//!   its snapshot (the oracle hashed it), or the next verify names it damaged;
//! - no point leaves a tier outside its retention (`last = N`: at least N
//!   newer points of the VM are on the tier after the step);
//! - nothing outside the tiers and the state directories changes;
//! - no coffer snapshot outlives its run (after a run that was not killed,
//!   no snapshot is left on any lab VM).
//!
//! With `COFFER_TORTURE_WORKERS=N` (and once in every default run, with
//! two), the first installation keeps its catalog on a real PostgreSQL
//! server (`common::postgres`) and every `apply` hands its backups, its
//! copies to S3 and its verify drills (due every few seconds in this mode)
//! to N `coffer worker` processes (`apply --distributed`); a killed apply
//! kills a worker too, mid-run, and starts a new one. After such a step
//! the test waits until the workers have emptied the queue (a dead
//! worker's action is taken over once its lease runs out), then the oracle
//! checks as always.
//!
//! A failure prints the seed and the steps so far; `COFFER_TORTURE_SEED=N`
//! replays that sequence (the operations and the data written are a function
//! of the seed; where a kill lands depends on timing). CI runs
//! `COFFER_TORTURE_SEEDS` seeds (default 2) of `COFFER_TORTURE_STEPS` steps
//! (default 14); `scripts/torture.sh N` runs N more.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::s3;

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Seeds whose operations (no kills among them, so they replay exactly)
/// once found a defect.
const REGRESSION_SEEDS: [u64; 1] = [1046];

const VMS: [&str; 2] = ["lab-vm-01", "lab-vm-02"];
const LOCAL_LAST: usize = 3;
const OFFSITE_LAST: usize = 4;
const VAULT_LAST: usize = 2;
const TIERS: [(&str, usize); 3] = [
    ("local", LOCAL_LAST),
    ("offsite", OFFSITE_LAST),
    ("vault", VAULT_LAST),
];

#[derive(Debug, Clone)]
enum Op {
    Write {
        vm: usize,
        percent: u64,
        seed: u64,
    },
    Backup {
        vm: usize,
        full: bool,
    },
    Apply,
    KillBackup {
        vm: usize,
        after_ms: u64,
    },
    KillApply {
        after_ms: u64,
    },
    CorruptChunk {
        pick: u64,
    },
    DeleteChunk {
        pick: u64,
    },
    DeleteIndex {
        pick: u64,
    },
    Verify,
    Gc,
    SecondInstance {
        vm: usize,
    },
    /// The host stops answering for one `apply` and one `compliance`.
    Unreachable,
}

fn draw(rng: &mut Rng) -> Op {
    let vm = rng.below(VMS.len() as u64) as usize;
    match rng.below(100) {
        0..=19 => Op::Write {
            vm,
            percent: 1 + rng.below(5),
            seed: rng.next(),
        },
        20..=39 => Op::Backup {
            vm,
            full: rng.below(6) == 0,
        },
        40..=51 => Op::Apply,
        52..=57 => Op::KillBackup {
            vm,
            after_ms: 50 + rng.below(900),
        },
        58..=63 => Op::KillApply {
            after_ms: 50 + rng.below(1500),
        },
        64..=68 => Op::CorruptChunk { pick: rng.next() },
        69..=73 => Op::DeleteChunk { pick: rng.next() },
        74..=76 => Op::DeleteIndex { pick: rng.next() },
        77..=86 => Op::Verify,
        87..=91 => Op::Gc,
        92..=95 => Op::Unreachable,
        _ => Op::SecondInstance { vm },
    }
}

/// What the oracle knows of one committed point.
#[derive(Debug, Clone)]
struct Known {
    vm: String,
    /// Device key → SHA-256 of the disk as the guest saw it at the snapshot.
    disks: BTreeMap<i32, String>,
    /// Restored and found equal at least once from this tier.
    proven: BTreeSet<String>,
}

struct World {
    seed: u64,
    dir: PathBuf,
    scratch: PathBuf,
    outside: PathBuf,
    bucket: String,
    log: Vec<String>,
    /// point id → what it must restore to.
    points: BTreeMap<String, Known>,
    /// tier → (point id → VM name), as last listed.
    listed: BTreeMap<String, BTreeMap<String, String>>,
    /// tier → points whose chunks or index the test damaged since the last
    /// verify that reported them; they may fail to restore.
    damaged: BTreeMap<String, BTreeSet<String>>,
    /// A run was killed and no clean run has followed yet: its snapshot may
    /// still be on the host.
    killed: bool,
    /// (relative path, size, modified) of everything outside the tiers and
    /// state directories.
    untouched: Vec<(PathBuf, u64, std::time::SystemTime)>,
    /// The workers of the workers mode, and the catalog they share.
    workers: Vec<std::process::Child>,
    catalog_url: Option<String>,
    /// Workers started so far (their names: w1, w2, …).
    workers_started: usize,
}

impl Drop for World {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn policy(
    bucket: &str,
    state_dir: &str,
    tier_path: &str,
    with_offsite: bool,
    catalog: &str,
) -> String {
    let endpoint = s3::moto().endpoint();
    let offsite = if with_offsite {
        format!(
            r#"
[tiers.offsite]
backend = "s3"
bucket = "{bucket}"
prefix = "torture"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "there"
encryption_key = {{ env = "TEST_OFFSITE_KEY" }}

[policies.all.retain.offsite]
last = {OFFSITE_LAST}

[tiers.vault]
backend = "tape"
library = "library"
site = "bunker"
offline = true

[policies.all.retain.vault]
last = {VAULT_LAST}
"#
        )
    } else {
        String::new()
    };
    // With workers, every few seconds, so that most applies have backups
    // to hand out.
    let schedule = if catalog.is_empty() {
        "0 0 1 * * *"
    } else {
        "*/5 * * * * *"
    };
    // With workers, often enough that drills go to them too.
    let drill_every = if catalog.is_empty() { "1d" } else { "5s" };
    format!(
        r#"
[settings]
timezone = "UTC"
state_dir = "{state_dir}"
{catalog}

[sources.lab]
kind = "lab"
lab_vms = 2

[tiers.local]
backend = "local"
path = "{tier_path}"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "{schedule}"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = {LOCAL_LAST}

[[policies.all.drills]]
kind = "verify"
every = "{drill_every}"
tier = "local"
{offsite}"#
    )
}

impl World {
    fn new(seed: u64, root: &Path, workers: usize) -> World {
        let dir = root.join("policies");
        let scratch = root.join("scratch");
        let outside = root.join("outside");
        for d in [&dir, &scratch, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("victim"), b"must never change").unwrap();
        let bucket = s3::bucket(false);
        let catalog_url = (workers > 0).then(common::postgres::database);
        let catalog = match &catalog_url {
            Some(url) => common::postgres::settings(&common::postgres::location_at(url, &scratch)),
            None => String::new(),
        };
        std::fs::write(
            dir.join("coffer.toml"),
            policy(&bucket, ".coffer", "repo", true, &catalog),
        )
        .unwrap();
        // The second installation: its own state directory and tier, the
        // same lab (its lab state is the first one's, through a link).
        let second = root.join("second");
        std::fs::create_dir_all(second.join(".coffer2/lab")).unwrap();
        std::fs::write(
            second.join("coffer.toml"),
            policy(&bucket, ".coffer2", "repo2", false, ""),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.join(".coffer/lab/lab"), second.join(".coffer2/lab/lab"))
            .unwrap();
        let mut w = World {
            seed,
            dir,
            scratch,
            outside,
            bucket,
            log: Vec::new(),
            points: BTreeMap::new(),
            listed: BTreeMap::new(),
            damaged: BTreeMap::new(),
            killed: false,
            untouched: Vec::new(),
            workers: Vec::new(),
            catalog_url,
            workers_started: 0,
        };
        let made = common::command_in(&w.dir)
            .args(["tape", "emulate", "library", "--cartridges", "6"])
            .args(["--capacity", "512MiB"])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", common::stderr(&made));
        for tier in ["local", "offsite", "vault"] {
            w.ok(&["repo", "init", "--tier", tier]);
        }
        w.ok_in(&w.second(), &["repo", "init", "--tier", "local"]);
        // The first apply starts the lab, which creates its VMs (the
        // workers' labs find them there).
        w.ok(&["apply", "--no-mail"]);
        for _ in 0..workers {
            w.start_worker();
        }
        if workers > 0 {
            w.ok(&w.apply_args());
            w.settle();
        }
        w.record_new_points(&BTreeMap::new());
        w.untouched = w.outside_state();
        w
    }

    /// Starts one more worker (workers mode).
    fn start_worker(&mut self) {
        self.workers_started += 1;
        let name = format!("w{}", self.workers_started);
        let verbose = std::env::var_os("COFFER_TORTURE_VERBOSE").is_some();
        let child = self
            .command(
                &self.dir,
                &[
                    "worker",
                    "--name",
                    &name,
                    "--parallel",
                    "1",
                    "--lease",
                    "2s",
                    "--poll",
                    "1s",
                ],
            )
            .stdout(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        self.workers.push(child);
    }

    /// The arguments of an apply: handed to the workers in workers mode.
    fn apply_args(&self) -> Vec<&'static str> {
        if self.workers.is_empty() {
            vec!["apply", "--no-mail"]
        } else {
            vec!["apply", "--no-mail", "--distributed"]
        }
    }

    /// Workers mode: waits until no action is queued or held, so that no
    /// worker writes beside the next step (a killed worker's action is
    /// taken over once its lease runs out).
    fn settle(&self) {
        let Some(url) = &self.catalog_url else {
            return;
        };
        let mut db = common::postgres::connect(url).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let open: i64 = db
                .query_one(
                    "SELECT count(*) FROM work WHERE state IN ('queued', 'claimed')",
                    &[],
                )
                .unwrap()
                .get(0);
            if open == 0 {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("the workers left {open} actions queued or held"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Workers mode: what the workers did, by kind ("4 backup, 2 copy").
    fn worked(&self) -> String {
        let Some(url) = &self.catalog_url else {
            return String::new();
        };
        let mut db = common::postgres::connect(url).unwrap();
        let rows = db
            .query(
                "SELECT action::jsonb->>'action' AS kind, count(*) FROM work \
                 WHERE state = 'done' GROUP BY kind ORDER BY kind",
                &[],
            )
            .unwrap();
        let done: Vec<String> = (rows.iter())
            .map(|r| format!("{} {}", r.get::<_, i64>(1), r.get::<_, String>(0)))
            .collect();
        format!("done by them: {}", done.join(", "))
    }

    fn second(&self) -> PathBuf {
        self.dir.parent().unwrap().join("second")
    }

    fn lab(&self) -> coffer::lab::state::Store {
        coffer::lab::state::Store::new(self.dir.join(".coffer/lab/lab"))
    }

    fn command(&self, dir: &Path, args: &[&str]) -> std::process::Command {
        let mut c = common::command_in(dir);
        c.args(args)
            .args(["-p", "."])
            .env("TEST_S3_KEY", "coffer-test")
            .env("TEST_S3_SECRET", "coffer-test-secret")
            .env("TEST_OFFSITE_KEY", "torture passphrase")
            .env("COFFER_RETRY_PAUSE_MS", "10");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(&self.dir, args).output().unwrap()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "torture seed {} failed: {what}\nsteps:\n  {}\nreplay: COFFER_TORTURE_SEED={} cargo test --test torture",
            self.seed,
            self.log.join("\n  "),
            self.seed
        );
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&self.dir, args)
    }

    fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.command(dir, args).output().unwrap();
        if !o.status.success() {
            self.fail(&format!(
                "`coffer {}` exited {:?}\n{}{}",
                args.join(" "),
                o.status.code(),
                common::stdout(&o),
                common::stderr(&o)
            ));
        }
        common::stdout(&o)
    }

    /// SHA-256 of every disk of `vm` as its guest sees it now.
    fn disk_hashes(&self, vm: &str) -> BTreeMap<i32, String> {
        self.lab()
            .read(|st, root| {
                let v = st.vms.iter().find(|v| v.name == vm).expect("lab VM");
                let mut out = BTreeMap::new();
                for d in &v.disks {
                    let mut h = Sha256::new();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut at = 0;
                    while at < d.capacity_bytes {
                        let n = (d.capacity_bytes - at).min(buf.len() as u64) as usize;
                        d.read(root, d.top(), at, &mut buf[..n])?;
                        h.update(&buf[..n]);
                        at += n as u64;
                    }
                    out.insert(d.key, hex::encode(h.finalize()));
                }
                Ok(out)
            })
            .unwrap()
    }

    fn snapshots_on(&self, vm: &str) -> usize {
        self.lab()
            .read(|st, _| {
                Ok(st
                    .vms
                    .iter()
                    .filter(|v| v.name == vm)
                    .map(|v| v.snapshots.len())
                    .sum())
            })
            .unwrap()
    }

    fn snapshots_on_lab(&self) -> usize {
        self.lab()
            .read(|st, _| Ok(st.vms.iter().map(|v| v.snapshots.len()).sum()))
            .unwrap()
    }

    /// Point id → VM name of every point a tier lists.
    fn list(&self, tier: &str) -> BTreeMap<String, String> {
        let out = self.ok(&["repo", "ls", "--tier", tier]);
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?;
                let vm = f.next()?;
                (vm != "unreadable:").then(|| (id.to_string(), vm.to_string()))
            })
            .collect()
    }

    /// Every file outside the tiers, the state directories and the
    /// scratch directory the test restores into.
    fn outside_state(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let root = self.dir.parent().unwrap();
        let skip = [
            self.dir.join("repo"),
            self.dir.join("library"),
            self.dir.join(".coffer"),
            self.second().join("repo2"),
            self.second().join(".coffer2"),
            self.scratch.clone(),
        ];
        let mut out: Vec<_> = walkdir::WalkDir::new(root)
            .into_iter()
            .filter_entry(|e| !skip.iter().any(|s| e.path() == s))
            .flatten()
            .filter(|e| !e.file_type().is_dir())
            .map(|e| {
                let m = e.path().symlink_metadata().unwrap();
                (
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    m.len(),
                    m.modified().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Maps the points that appeared since `before` to the disks as they
    /// are now (no guest writes run beside coffer in this test, so the disk
    /// at any snapshot since the last write is the disk now).
    fn record_new_points(&mut self, before: &BTreeMap<String, BTreeMap<String, String>>) {
        let mut hashes: BTreeMap<String, BTreeMap<i32, String>> = BTreeMap::new();
        let mut listed = BTreeMap::new();
        for (tier, _) in TIERS {
            listed.insert(tier.to_string(), self.list(tier));
        }
        for (tier, points) in &listed {
            for (id, vm) in points {
                let was = before.get(tier).is_some_and(|b| b.contains_key(id));
                if was || self.points.contains_key(id) {
                    continue;
                }
                if *tier != "local" {
                    self.fail(&format!(
                        "point {id} appeared on {tier} without being on the backup tier first"
                    ));
                }
                let disks = hashes
                    .entry(vm.clone())
                    .or_insert_with(|| self.disk_hashes(vm))
                    .clone();
                self.points.insert(
                    id.clone(),
                    Known {
                        vm: vm.clone(),
                        disks,
                        proven: BTreeSet::new(),
                    },
                );
            }
        }
        self.listed = listed;
    }

    /// A point that left a tier must leave `last` newer points of its VM
    /// on that tier, unless its copy there was one the test damaged, that
    /// data verification found damaged, and that the point still has
    /// elsewhere: the planner prunes such a copy alone, to be copied
    /// there again.
    fn check_retention(&self, before: &BTreeMap<String, BTreeMap<String, String>>) {
        let config = coffer::policy::load(&self.dir).config.unwrap();
        let verdicts = coffer::catalog::Catalog::open_at(&config.settings.catalog)
            .and_then(|c| c.data_verdicts())
            .unwrap();
        for (tier, last) in TIERS {
            let (Some(was), Some(now)) = (before.get(tier), self.listed.get(tier)) else {
                continue;
            };
            for (id, vm) in was {
                if now.contains_key(id) {
                    continue;
                }
                // Point ids sort by creation time. Retention counts the
                // VM's points wherever they are, and a run copies the newer
                // ones to the tier before it prunes there: count what the
                // tier holds after the step.
                let newer = now
                    .iter()
                    .filter(|(other, other_vm)| *other_vm == vm && *other > id)
                    .count();
                let damaged_copy = self.damaged.get(tier).is_some_and(|d| d.contains(id))
                    && verdicts.get(&(id.clone(), tier.to_string())) == Some(&false)
                    && (self.listed.iter()).any(|(t, ps)| t != tier && ps.contains_key(id));
                if newer < last && !damaged_copy {
                    self.fail(&format!(
                        "point {id} of {vm} left tier {tier} with only {newer} newer points there (retention keeps the last {last})"
                    ));
                }
            }
        }
    }

    /// Restores `id` from `tier` and compares every disk with the oracle.
    fn restores_exactly(&self, tier: &str, id: &str) -> Result<(), String> {
        let known = &self.points[id];
        for (key, want) in &known.disks {
            let out = self.scratch.join("restored.raw");
            let _ = std::fs::remove_file(&out);
            let o = self.run(&[
                "repo",
                "restore",
                id,
                "--tier",
                tier,
                "--disk",
                &key.to_string(),
                "-o",
                out.to_str().unwrap(),
            ]);
            if !o.status.success() {
                return Err(format!(
                    "restore of disk {key} failed: {}",
                    common::stderr(&o).trim()
                ));
            }
            let mut h = Sha256::new();
            let mut f = std::fs::File::open(&out).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let got = hex::encode(h.finalize());
            if &got != want {
                return Err(format!("disk {key} restored to {got}, expected {want}"));
            }
        }
        Ok(())
    }

    /// Every listed point not yet proven on its tier is restored; a point
    /// that does not restore must have been damaged by the test and be
    /// named by the next verify.
    fn check_points(&mut self) {
        let mut unproven = Vec::new();
        for (tier, points) in &self.listed {
            for id in points.keys() {
                if !self.points[id].proven.contains(tier) {
                    unproven.push((tier.clone(), id.clone()));
                }
            }
        }
        for (tier, id) in unproven {
            match self.restores_exactly(&tier, &id) {
                Ok(()) => {
                    self.points.get_mut(&id).unwrap().proven.insert(tier);
                }
                Err(why) => {
                    let damaged = self.damaged.get(&tier).is_some_and(|d| d.contains(&id))
                        || self.test_damaged_anything(&tier);
                    if !damaged {
                        self.fail(&format!(
                            "point {id} of {} on {tier} was committed but does not restore: {why}",
                            self.points[&id].vm
                        ));
                    }
                    let v = self.run(&["repo", "verify", "--tier", &tier]);
                    let report = format!("{}{}", common::stdout(&v), common::stderr(&v));
                    if v.status.code() != Some(4) || !report.contains(&id) {
                        self.fail(&format!(
                            "point {id} on {tier} does not restore ({why}) but verify does not name it (exit {:?}):\n{report}",
                            v.status.code()
                        ));
                    }
                }
            }
        }
    }

    fn test_damaged_anything(&self, tier: &str) -> bool {
        self.damaged.get(tier).is_some_and(|d| !d.is_empty())
    }

    /// Chunk files of the local tier, sorted (the pick is deterministic).
    fn chunk_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(self.dir.join("repo/chunks"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.file_name().to_string_lossy().contains(".tmp-"))
            .map(|e| e.path().to_path_buf())
            .collect();
        v.sort();
        v
    }

    /// The damage a chunk does: every point on the local tier may now be
    /// unrestorable until verify names it (the test does not know which
    /// points share the chunk).
    fn damage_all_local(&mut self) {
        let ids: BTreeSet<String> = self.listed["local"].keys().cloned().collect();
        let entry = self.damaged.entry("local".into()).or_default();
        entry.extend(ids);
        for id in self.listed["local"].keys() {
            if let Some(k) = self.points.get_mut(id) {
                k.proven.remove("local");
            }
        }
    }

    fn spawn_and_kill(&self, args: &[&str], after: Duration) {
        let mut child = self
            .command(&self.dir, args)
            .env("COFFER_LAB_FAULTS", "unavailable=3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + after;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn step(&mut self, op: Op) {
        self.log.push(format!("{op:?}"));
        let before = self.listed.clone();
        let mut clean_run = false;
        match op {
            Op::Write { vm, percent, seed } => {
                self.lab()
                    .update(|st, root| {
                        coffer::lab::ops::write_percent(st, root, VMS[vm], percent as f64, seed)
                    })
                    .unwrap();
            }
            Op::Backup { vm, full } => {
                let mut args = vec!["backup", VMS[vm]];
                if full {
                    args.push("--full");
                }
                self.ok(&args);
                clean_run = true;
            }
            Op::Apply => {
                // An apply may report failed actions (a drill finding the
                // damage this test made): that is an honest report. It must
                // not crash.
                let o = self.run(&self.apply_args());
                self.settle();
                if std::env::var_os("COFFER_TORTURE_VERBOSE").is_some() {
                    eprintln!("{}{}", common::stdout(&o), common::stderr(&o));
                }
                if !matches!(o.status.code(), Some(0) | Some(1)) {
                    self.fail(&format!(
                        "apply exited {:?}: {}",
                        o.status.code(),
                        common::stderr(&o)
                    ));
                }
                clean_run = true;
            }
            Op::KillBackup { vm, after_ms } => {
                self.spawn_and_kill(&["backup", VMS[vm]], Duration::from_millis(after_ms));
                self.killed = true;
            }
            Op::KillApply { after_ms } => {
                let args = self.apply_args();
                if self.workers.is_empty() {
                    self.spawn_and_kill(&args, Duration::from_millis(after_ms));
                } else {
                    // A worker dies mid-run too: SIGKILL, and a new one in
                    // its place.
                    let killer = {
                        let victim = (after_ms as usize) % self.workers.len();
                        let mut child = self.workers.remove(victim);
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_millis(after_ms / 2));
                            let _ = child.kill();
                            let _ = child.wait();
                        })
                    };
                    self.spawn_and_kill(&args, Duration::from_millis(after_ms));
                    killer.join().unwrap();
                    self.start_worker();
                    self.settle();
                }
                self.killed = true;
            }
            Op::CorruptChunk { pick } | Op::DeleteChunk { pick } => {
                let files = self.chunk_files();
                if !files.is_empty() {
                    let f = &files[(pick % files.len() as u64) as usize];
                    if matches!(op, Op::CorruptChunk { .. }) {
                        let mut bytes = std::fs::read(f).unwrap();
                        let at = bytes.len() / 2;
                        bytes[at] ^= 0x5a;
                        std::fs::write(f, bytes).unwrap();
                    } else {
                        std::fs::remove_file(f).unwrap();
                    }
                    self.damage_all_local();
                }
            }
            Op::DeleteIndex { pick } => {
                let ids: Vec<String> = self.listed["local"].keys().cloned().collect();
                if !ids.is_empty() {
                    let id = &ids[(pick % ids.len() as u64) as usize];
                    let vm_dirs = std::fs::read_dir(self.dir.join("repo/points")).unwrap();
                    for vm_dir in vm_dirs.flatten() {
                        let p = vm_dir.path().join(id);
                        if let Ok(rd) = std::fs::read_dir(&p) {
                            for f in rd.flatten() {
                                if f.file_name().to_string_lossy().ends_with(".index") {
                                    std::fs::remove_file(f.path()).unwrap();
                                    break;
                                }
                            }
                        }
                    }
                    self.damaged
                        .entry("local".into())
                        .or_default()
                        .insert(id.clone());
                    self.points.get_mut(id).unwrap().proven.remove("local");
                }
            }
            Op::Verify => {
                let o = self.run(&["repo", "verify", "--tier", "local"]);
                match o.status.code() {
                    Some(0) => {
                        // Verify found nothing: every point the test
                        // damaged must restore (checked below).
                    }
                    Some(4) => {}
                    other => self.fail(&format!("verify exited {other:?}: {}", common::stderr(&o))),
                }
            }
            Op::Gc => {
                let o = self.run(&["repo", "gc", "--tier", "local"]);
                // gc refuses to sweep while a point it cannot read (an index
                // this test deleted) might reference a chunk: safe, and said.
                let refused = common::stderr(&o).contains("gc stopped before deleting anything")
                    && self.test_damaged_anything("local");
                if !o.status.success() && !refused {
                    self.fail(&format!("gc failed: {}", common::stderr(&o)));
                }
            }
            Op::Unreachable => {
                // The source keeps its name but points at a closed port: to
                // coffer the host is down.
                let path = self.dir.join("coffer.toml");
                let good = std::fs::read_to_string(&path).unwrap();
                let down = good.replace(
                    "[sources.lab]\nkind = \"lab\"\nlab_vms = 2\n",
                    "[sources.lab]\nkind = \"esxi\"\nurl = \"https://127.0.0.1:9\"\nuser = \"root\"\npassword = { env = \"TEST_S3_KEY\" }\n",
                );
                assert_ne!(down, good, "the policy names the lab source");
                std::fs::write(&path, &down).unwrap();
                let apply = self.run(&["apply", "--no-mail"]);
                let compliance = self.run(&["compliance", "--json"]);
                std::fs::write(&path, &good).unwrap();
                for (tier, _) in TIERS {
                    let now = self.list(tier);
                    if let Some(gone) = before[tier].keys().find(|id| !now.contains_key(*id)) {
                        self.fail(&format!(
                            "point {gone} left tier {tier} while its host was down"
                        ));
                    }
                }
                if !matches!(apply.status.code(), Some(0) | Some(1)) {
                    self.fail(&format!(
                        "apply with the host down exited {:?}: {}",
                        apply.status.code(),
                        common::stderr(&apply)
                    ));
                }
                if compliance.status.code() != Some(3) {
                    self.fail(&format!(
                        "compliance with the host down exited {:?}, not 3: {}{}",
                        compliance.status.code(),
                        common::stdout(&compliance),
                        common::stderr(&compliance)
                    ));
                }
                let report: serde_json::Value =
                    serde_json::from_slice(&compliance.stdout).unwrap_or_default();
                let text = report.to_string();
                for vm in VMS {
                    if !text.contains(vm) || !text.contains("unknown") {
                        self.fail(&format!(
                            "{vm} is not reported unknown while its host is down: {text}"
                        ));
                    }
                }
                // The policy file is back as it was: only its time changed.
                self.untouched = self.outside_state();
            }
            Op::SecondInstance { vm } => {
                // The first installation reads slowly (its downloads answer
                // 503 a few times) while a second one backs the same VM up:
                // neither removes the other's live snapshot.
                let mut first = self
                    .command(&self.dir, &["backup", VMS[vm]])
                    .env("COFFER_LAB_FAULTS", "unavailable=4")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while self.snapshots_on(VMS[vm]) == 0 && Instant::now() < deadline {
                    if first.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let second = self
                    .command(&self.second(), &["backup", VMS[vm]])
                    .output()
                    .unwrap();
                let first = first.wait_with_output().unwrap();
                // Whichever finds the other's snapshot first leaves it alone
                // and says so; both may not fail.
                let left_alone = |o: &Output| common::stderr(o).contains("is left alone");
                if !first.status.success() && (!left_alone(&first) || !second.status.success()) {
                    self.fail(&format!(
                        "the first installation's backup failed beside a second installation: {}",
                        common::stderr(&first)
                    ));
                }
                // The second either backs up after the first is done, or
                // finds the first's snapshot, leaves it alone and says so.
                if !second.status.success() && !common::stderr(&second).contains("is left alone") {
                    self.fail(&format!(
                        "the second installation's backup failed: {}",
                        common::stderr(&second)
                    ));
                }
                clean_run = !self.killed;
            }
        }
        if clean_run && !self.killed {
            let left = self.snapshots_on_lab();
            if left != 0 {
                self.fail(&format!("{left} snapshot(s) outlived their run"));
            }
        }
        if clean_run {
            // A clean run after a killed one removes what the killed one
            // left (its journal says the run is dead).
            if self.killed && matches!(self.log.last(), Some(l) if l.starts_with("Apply")) {
                let left = self.snapshots_on_lab();
                if left != 0 {
                    self.fail(&format!(
                        "{left} snapshot(s) of a killed run survived the next apply"
                    ));
                }
                self.killed = false;
            }
        }
        self.record_new_points(&before);
        self.check_retention(&before);
        if matches!(self.log.last(), Some(l) if l.starts_with("Verify")) {
            // A verify that exits 0 clears nothing by itself; a restore
            // still proves each point below.
        }
        self.check_points();
        let now = self.outside_state();
        if now != self.untouched {
            self.fail(&format!(
                "files outside the tiers and state directories changed:\nbefore {:?}\nafter  {:?}",
                self.untouched, now
            ));
        }
        assert!(
            std::fs::read(self.outside.join("victim")).unwrap() == b"must never change",
            "the file outside every tier is intact"
        );
    }

    /// The end of a seed: a clean apply removes what kills left, and every
    /// point restores or verify names it.
    fn finish(&mut self) {
        self.log.push("final apply".into());
        let before = self.listed.clone();
        self.settle();
        let o = self.run(&self.apply_args());
        self.settle();
        if !matches!(o.status.code(), Some(0) | Some(1)) {
            self.fail(&format!(
                "final apply exited {:?}: {}",
                o.status.code(),
                common::stderr(&o)
            ));
        }
        let left = self.snapshots_on_lab();
        if left != 0 {
            self.fail(&format!("{left} snapshot(s) left after the final apply"));
        }
        self.record_new_points(&before);
        self.check_retention(&before);
        self.check_points();
        let _ = &self.bucket;
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_seed(seed: u64, steps: u64) {
    run_seed_with(seed, steps, env_u64("COFFER_TORTURE_WORKERS", 0) as usize)
}

fn run_seed_with(seed: u64, steps: u64, workers: usize) {
    let t = tempfile::tempdir().unwrap();
    let mut w = World::new(seed, t.path(), workers);
    let mut rng = Rng(seed);
    for _ in 0..steps {
        let op = draw(&mut rng);
        let started = Instant::now();
        let name = format!("{op:?}");
        w.step(op);
        eprintln!(
            "seed {seed}: {name} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    w.finish();
    eprintln!(
        "torture seed {seed}{}: {} steps, {} points committed, all checks held",
        if workers > 0 {
            format!(" ({workers} workers; {})", w.worked())
        } else {
            String::new()
        },
        w.log.len(),
        w.points.len()
    );
}

/// The bounded CI run: a few seeds; `COFFER_TORTURE_SEED` replays one,
/// `COFFER_TORTURE_FIRST_SEED` + `COFFER_TORTURE_SEEDS` run a range
/// (`scripts/torture.sh`).
#[test]
fn torture_every_committed_point_restores_and_nothing_escapes_the_tiers() {
    let steps = env_u64("COFFER_TORTURE_STEPS", 14);
    if let Ok(seed) = std::env::var("COFFER_TORTURE_SEED") {
        run_seed(
            seed.parse().expect("COFFER_TORTURE_SEED is a number"),
            steps,
        );
        return;
    }
    let first = env_u64("COFFER_TORTURE_FIRST_SEED", 1);
    let seeds = env_u64("COFFER_TORTURE_SEEDS", 2);
    for seed in first..first + seeds {
        run_seed(seed, steps);
    }
    // Seeds that found a defect, replayed by every default run. 1046: a
    // prune on the offsite tier went ahead although the copy of the newer
    // point that retention counted had failed (its chunk was corrupt).
    if std::env::var_os("COFFER_TORTURE_FIRST_SEED").is_none() {
        for seed in REGRESSION_SEEDS {
            run_seed(seed, steps);
        }
        // And one seed with the backups, copies, drills and gc handed to two workers.
        if std::env::var_os("COFFER_TORTURE_WORKERS").is_none() {
            run_seed_with(first, steps, 2);
        }
    }
}
