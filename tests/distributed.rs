//! Several runners sharing one installation: a coordinator (`apply
//! --distributed`) and three workers (`coffer worker`, separate processes)
//! against the lab as a vCenter with two ESXi hosts and a dozen VMs, with
//! the catalog and its work queue on a real PostgreSQL server
//! (`common::postgres`). One worker is killed with SIGKILL in the middle
//! of a backup; another takes the backup over once its lease runs out,
//! removes the snapshot it left and does it again.
//!
//! Checked against the lab's own records and the repository: every VM has
//! exactly one point, no snapshot is left, and no host ever had more
//! snapshots open at once than `max_per_host`, across all workers.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use coffer::lab::{Lab, LabConfig};
use common::text;

const VMS: u32 = 12;
const PER_HOST: u32 = 2;

/// Processes (workers, the coordinator), killed when the test ends however
/// it ends.
struct Processes(Vec<(String, Child)>);

impl Processes {
    /// Kills process `name` with SIGKILL and reaps it.
    fn kill(&mut self, name: &str) {
        let (_, child) = self.0.iter_mut().find(|(n, _)| n == name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for process `name` to end, at most `limit`.
    fn wait(&mut self, name: &str, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let (_, child) = self.0.iter_mut().find(|(n, _)| n == name).unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The policy directory `dir`: the lab as source `vc`, a local tier, the
/// catalog at `url`; `extra` goes into the source's table, `policy_extra`
/// into the policy's.
fn write_policy(
    dir: &Path,
    lab: &coffer::lab::LabHandle,
    url: &str,
    extra: &str,
    policy_extra: &str,
) {
    let catalog = common::postgres::settings(&common::postgres::location_at(url, dir));
    std::fs::write(dir.join("lab-password"), lab.password()).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
{catalog}
[sources.vc]
kind = "vcenter"
url = "{lab_url}"
user = "{user}"
password = {{ file = "{lab_pw}" }}
thumbprint = "{thumbprint}"
{extra}

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[policies.all]
sources = ["vc"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"
{policy_extra}

[policies.all.retain.local]
last = 3
"#,
            lab_url = lab.url(),
            user = lab.user(),
            lab_pw = dir.join("lab-password").display(),
            thumbprint = lab.thumbprint(),
        ),
    )
    .unwrap();
}

/// Starts `coffer ARGS` as `name`; what it prints goes to `dir/NAME.log`.
fn start(dir: &Path, name: &str, args: &[&str]) -> (String, Child) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (name.to_string(), child)
}

/// A worker of two backups at once and a 3 s lease, with `more` arguments.
fn worker(dir: &Path, name: &str, more: &[&str]) -> (String, Child) {
    let mut args = vec![
        "worker",
        "--name",
        name,
        "--parallel",
        "2",
        "--lease",
        "3s",
        "--poll",
        "1s",
    ];
    args.extend_from_slice(more);
    start(dir, name, &args)
}

/// A loopback address with a port free now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// What the processes printed, for a failure's message.
fn logs(dir: &Path) -> String {
    ["coordinator", "w1", "w2", "w3"]
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            format!("--- {n}\n{log}")
        })
        .collect()
}

/// No VM of the lab's `state` has a snapshot left.
fn assert_no_snapshot(state: &serde_json::Value) {
    for v in state["vms"].as_array().unwrap() {
        assert!(
            v["snapshots"].as_array().unwrap().is_empty(),
            "{} kept a snapshot",
            v["name"]
        );
    }
}

fn lab_state(lab: &coffer::lab::LabHandle) -> serde_json::Value {
    // The lab writes its state whole (rename over): a read sees one state.
    let bytes = std::fs::read(lab.state_dir().join("state.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The lab as a vCenter of `vms` VMs (its state under `dir/lab`), with a
/// password.
fn lab_vcenter(dir: &Path, vms: u32) -> coffer::lab::LabHandle {
    let mut config = LabConfig::new(dir.join("lab"));
    config.vms = vms;
    config.vcenter = true;
    config.password = Some("lab-pw".into());
    Lab::start(config).unwrap()
}

/// Creates the repositories of `tiers` in the policy directory `dir`.
fn init_tiers(dir: &Path, tiers: &[&str]) {
    for tier in tiers {
        let init = common::command_in(dir)
            .args(["repo", "init", "--tier", tier, "-p", "."])
            .output()
            .unwrap();
        assert!(init.status.success(), "{}", text(&init));
    }
}

/// `coffer repo verify` of `tier` finds nothing wrong.
fn assert_verifies(dir: &Path, tier: &str) {
    let verify = common::in_policy_dir(dir, &["repo", "verify", "--tier", tier]);
    assert!(verify.status.success(), "{}", text(&verify));
}

/// The (VM, worker) of the first row of `kind` a worker holds that
/// `wanted` accepts, waiting at most `limit` (`what` names it in the
/// failure).
fn first_held(
    db: &mut postgres::Client,
    dir: &Path,
    kind: &str,
    what: &str,
    limit: Duration,
    mut wanted: impl FnMut(&str) -> bool,
) -> (String, String) {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            Instant::now() < deadline,
            "no worker was seen holding {what}\n{}",
            logs(dir)
        );
        // Until the coordinator has migrated the database, no table.
        let held: Vec<(String, String)> = db
            .query(
                "SELECT vm, worker FROM work WHERE state = 'claimed' \
                 AND action::jsonb->>'action' = $1 ORDER BY id",
                &[&kind],
            )
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        if let Some(found) = held.into_iter().find(|(vm, _)| wanted(vm)) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_coordinator_and_three_workers_share_the_backups_within_the_limits() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = lab_vcenter(dir, VMS);
    let url = common::postgres::database();
    write_policy(
        dir,
        &lab,
        &url,
        &format!("max_per_host = {PER_HOST}\nmax_per_datastore = {VMS}"),
        // Slow enough that a backup is still reading when its worker is
        // killed.
        "io_limit = \"16MiB/s\"",
    );
    init_tiers(dir, &["local"]);

    // Each worker serves its metrics.
    let metrics: Vec<(String, String)> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| (w.to_string(), free_addr()))
        .collect();
    let mut processes = Processes(vec![
        worker(dir, "w1", &["--metrics", &metrics[0].1]),
        worker(dir, "w2", &["--metrics", &metrics[1].1]),
        worker(dir, "w3", &["--metrics", &metrics[2].1]),
        start(dir, "coordinator", &["apply", "--distributed", "--no-mail"]),
    ]);

    // Kill the first worker seen holding a backup whose snapshot is open,
    // with SIGKILL.
    let mut db = common::postgres::connect(&url).unwrap();
    let with_snapshot = |vm: &str| {
        (lab_state(&lab)["vms"].as_array().unwrap().iter())
            .any(|v| v["name"] == vm && !v["snapshots"].as_array().unwrap().is_empty())
    };
    let what = "a backup with its snapshot open";
    let (victim_vm, victim) = first_held(
        &mut db,
        dir,
        "backup",
        what,
        Duration::from_secs(60),
        with_snapshot,
    );
    processes.kill(&victim);

    // The coordinator ends once every backup is done.
    let status = processes.wait("coordinator", Duration::from_secs(180));
    let printed = std::fs::read_to_string(dir.join("coordinator.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}\n{}", logs(dir));
    assert_eq!(
        printed.matches("done + backup").count(),
        VMS as usize,
        "{printed}"
    );
    assert!(
        printed.contains("[worker w"),
        "each outcome names its worker: {printed}"
    );

    // The queue: every backup done; the victim's by another worker, after
    // it removed the snapshot the killed worker left.
    let rows = db
        .query(
            "SELECT vm, state, worker, attempt, recovered FROM work ORDER BY seq",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), VMS as usize);
    for r in &rows {
        let (vm, state): (String, String) = (r.get(0), r.get(1));
        assert_eq!(state, "done", "{vm}");
        if vm == victim_vm {
            let worker: String = r.get(2);
            let attempt: i64 = r.get(3);
            let recovered: Option<String> = r.get(4);
            assert_ne!(worker, victim);
            assert!(attempt >= 2, "{vm}: attempt {attempt}");
            let recovered = recovered.unwrap_or_default();
            assert!(
                recovered.contains(&format!("took over from worker {victim}"))
                    && recovered.contains("removed its snapshot coffer-"),
                "{recovered}"
            );
        }
    }
    let workers_seen: i64 = db
        .query_one("SELECT count(*) FROM workers", &[])
        .unwrap()
        .get(0);
    assert_eq!(workers_seen, 3);

    // Each surviving worker's metrics count, under its name, the backups
    // the queue says it did; Prometheus's checker accepts them.
    for (name, addr) in metrics.iter().filter(|(n, _)| *n != victim) {
        let (status, body) = common::metrics::get(addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        common::metrics::promtool_accepts(&body);
        let done = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(2).as_deref() == Some(name.as_str()))
            .count();
        let counted = common::metrics::sample(
            &body,
            &format!(r#"coffer_actions_total{{action="backup",result="success",worker="{name}"}}"#),
        );
        assert_eq!(
            counted.unwrap_or(0.0),
            done as f64,
            "worker {name} did {done} backups; its metrics:\n{body}"
        );
    }

    // The lab's records: nothing left behind, the limit held on each host.
    let state = lab_state(&lab);
    assert_no_snapshot(&state);
    let per_host = state["most_snapshots_per_host"].as_object().unwrap();
    assert_eq!(per_host.len(), 2, "{per_host:?}");
    for (host, most) in per_host {
        assert!(
            most.as_u64().unwrap() <= u64::from(PER_HOST),
            "host {host} had {most} snapshots open at once"
        );
    }

    // The repository: exactly one point per VM, and it verifies.
    let (_, manifests) = common::local_points(dir);
    let mut vms: Vec<&str> = manifests.iter().map(|m| m.vm.name.as_str()).collect();
    vms.sort();
    let before = vms.len();
    vms.dedup();
    assert_eq!(before, VMS as usize, "one point per VM, no more: {vms:?}");
    assert_eq!(vms.len(), VMS as usize, "{vms:?}");
    assert_verifies(dir, "local");

    // `status` shows the fleet.
    let status = common::command_in(dir)
        .args(["status", "-p", "."])
        .output()
        .unwrap();
    let status = text(&status);
    for n in ["w1", "w2", "w3"] {
        assert!(status.contains(&format!("  {n} on ")), "{status}");
    }
    drop(processes);
}

#[test]
fn distributed_needs_a_shared_catalog() {
    let t = tempfile::tempdir().unwrap();
    common::one_vm_lab_policy(t.path(), "");
    let run = |args: &[&str]| common::in_policy_dir(t.path(), args);
    assert!(run(&["repo", "init", "--tier", "local"]).status.success());
    for args in [
        &["apply", "--distributed", "--no-mail"][..],
        &["worker"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("postgres://"),
            "{args:?} says what it needs: {}",
            text(&o)
        );
    }
}

/// A lab vCenter of one VM, a policy on the catalog at `url` reading it at
/// 8 MiB/s, an initialised tier, and worker `w1` and a coordinator
/// started on it.
fn one_vm_run(dir: &Path, url: &str) -> (coffer::lab::LabHandle, Processes) {
    let lab = lab_vcenter(dir, 1);
    write_policy(dir, &lab, url, "", "io_limit = \"8MiB/s\"");
    init_tiers(dir, &["local"]);
    let processes = Processes(vec![
        worker(dir, "w1", &[]),
        start(dir, "coordinator", &["apply", "--distributed", "--no-mail"]),
    ]);
    (lab, processes)
}

/// Waits until `then` answers true, asked while the lab's VM has a
/// snapshot open (w1 reads).
fn while_reading(lab: &coffer::lab::LabHandle, dir: &Path, mut then: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "w1 never held the backup\n{}",
            logs(dir)
        );
        let state = lab_state(lab);
        let open = state["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| !v["snapshots"].as_array().unwrap().is_empty());
        if open && then() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// w1's log once it holds `wanted`, waiting at most `limit`.
fn w1_log_with(dir: &Path, wanted: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = std::fs::read_to_string(dir.join("w1.log")).unwrap_or_default();
        if log.contains(wanted) {
            return log;
        }
        assert!(Instant::now() < deadline, "{}", logs(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A worker whose lease was taken from it while it read (its lease ran out
/// while it was cut off from the database, and another worker took the
/// backup over) commits nothing: it asks the database right before the
/// commit, and the point is not written. Without that fence the VM would
/// get a second point from the same run. The snapshot is still removed.
#[test]
fn a_worker_whose_lease_was_taken_over_commits_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let url = common::postgres::database();
    let (lab, _processes) = one_vm_run(dir, &url);
    // While w1 reads, the backup becomes another worker's, as a takeover
    // after a lost lease leaves it.
    let mut db = common::postgres::connect(&url).unwrap();
    while_reading(&lab, dir, || {
        let taken = db
            .execute(
                "UPDATE work SET worker = 'w9', attempt = attempt + 1, \
                 lease_until = lease_until + 600000 \
                 WHERE state = 'claimed' AND worker = 'w1'",
                &[],
            )
            .unwrap();
        taken == 1
    });
    // w1 stops (or is refused the commit), and says so in its outcome
    // line (`FAILED + backup …`).
    let said = w1_log_with(dir, "+ backup lab-vm-01", Duration::from_secs(120));
    assert!(
        said.contains("FAILED + backup")
            && said.contains("is no longer this worker's")
            && said.contains("nothing was committed"),
        "{said}"
    );
    let (_, manifests) = common::local_points(dir);
    assert!(manifests.is_empty(), "a point was committed: {manifests:?}");
    let state = lab_state(&lab);
    assert_no_snapshot(&state);
    // The row stays the other worker's; w1 wrote no outcome over it.
    let row = db.query_one("SELECT worker, state FROM work", &[]).unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("w9"));
    assert_eq!(row.get::<_, String>(1), "claimed");
}

/// A TCP proxy to `upstream` that can cut every connection through it and
/// refuse new ones, as a network partition does, and heal again; or cut
/// at the moment a client sends given bytes (a statement's text), before
/// they reach the server.
struct CutProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    trigger: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl CutProxy {
    fn to(upstream: std::net::SocketAddr) -> CutProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trigger = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let is_cut = cut.clone();
        let cut_on = trigger.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                // Only what clients send is matched against the trigger.
                let pairs = [
                    (conn.try_clone().unwrap(), up.try_clone().unwrap(), true),
                    (up, conn, false),
                ];
                for (mut from, mut to, from_client) in pairs {
                    let is_cut = is_cut.clone();
                    let cut_on = cut_on.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if is_cut.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    let sent = &buf[..n];
                                    let hit =
                                        from_client
                                            && cut_on.lock().unwrap().as_deref().is_some_and(|t| {
                                                sent.windows(t.len()).any(|w| w == t)
                                            });
                                    if hit {
                                        is_cut.store(true, Ordering::SeqCst);
                                        break;
                                    }
                                    if to.write_all(sent).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { addr, cut, trigger }
    }

    /// Cuts, or heals (and forgets the trigger).
    fn set_cut(&self, cut: bool) {
        if !cut {
            *self.trigger.lock().unwrap() = None;
        }
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts, as `set_cut(true)` does, when a client sends `bytes`.
    fn cut_when_sent(&self, bytes: &[u8]) {
        *self.trigger.lock().unwrap() = Some(bytes.to_vec());
    }

    fn is_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A worker cut off from the database while it reads (its heartbeat
/// cannot renew the lease) commits nothing: the fence right before the
/// commit cannot confirm the lease, so no point is written, and the
/// snapshot is removed. Once the network heals, the outcome is recorded
/// as failed, saying why.
#[test]
fn a_worker_cut_off_from_the_catalog_commits_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let server_port = common::postgres::server().port;
    let proxy = CutProxy::to(format!("127.0.0.1:{server_port}").parse().unwrap());
    let through = common::postgres::database().replace(
        &format!(":{server_port}/"),
        &format!(":{}/", proxy.addr.port()),
    );
    let (lab, _processes) = one_vm_run(dir, &through);
    // The partition, once w1 reads with its snapshot open.
    while_reading(&lab, dir, || {
        proxy.set_cut(true);
        true
    });
    // w1 ends its backup and waits to record the outcome; by then the
    // snapshot is gone and no point was committed.
    w1_log_with(dir, "recording the outcome", Duration::from_secs(120));
    assert_no_snapshot(&lab_state(&lab));
    let (_, manifests) = common::local_points(dir);
    assert!(manifests.is_empty(), "a point was committed: {manifests:?}");
    // The network heals: the failure and its reason are recorded.
    proxy.set_cut(false);
    let said = w1_log_with(dir, "+ backup lab-vm-01", Duration::from_secs(60));
    assert!(
        said.contains("FAILED + backup") && said.contains("could not confirm that backup"),
        "{said}"
    );
    let (_, manifests) = common::local_points(dir);
    assert!(manifests.is_empty(), "a point was committed: {manifests:?}");
}

/// A worker cut off from the catalog right after it committed its point,
/// as it sends the outcome, loses its lease to another worker. The one
/// that takes the backup over finds the point the earlier attempt
/// committed and does not back the VM up again: the run's backup of the
/// VM is that one point. The cut-off worker's late outcome is not written.
#[test]
fn a_point_committed_before_the_lease_was_lost_counts_once() {
    let t = tempfile::tempdir().unwrap();
    // Two policy directories side by side (one is walked recursively).
    let dir = &t.path().join("main");
    std::fs::create_dir_all(dir).unwrap();
    let server_port = common::postgres::server().port;
    let proxy = CutProxy::to(format!("127.0.0.1:{server_port}").parse().unwrap());
    let url = common::postgres::database();
    let through = url.replace(
        &format!(":{server_port}/"),
        &format!(":{}/", proxy.addr.port()),
    );
    let lab = lab_vcenter(dir, 1);
    write_policy(dir, &lab, &url, "", "");
    // w1 reaches the catalog through the proxy: its own copy of the
    // policies, on the same tier.
    let w1_dir = t.path().join("w1-policies");
    std::fs::create_dir_all(&w1_dir).unwrap();
    write_policy(&w1_dir, &lab, &through, "", "");
    let toml = std::fs::read_to_string(w1_dir.join("coffer.toml")).unwrap();
    let shared = format!("path = \"{}\"", dir.join("repo").display());
    std::fs::write(
        w1_dir.join("coffer.toml"),
        toml.replace("path = \"repo\"", &shared),
    )
    .unwrap();
    init_tiers(dir, &["local"]);
    // The partition comes as w1 sends its outcome: after the commit.
    proxy.cut_when_sent(b"finished = $5");
    let mut processes = Processes(vec![
        worker(&w1_dir, "w1", &[]),
        start(dir, "coordinator", &["apply", "--distributed", "--no-mail"]),
    ]);
    let w1_log = || std::fs::read_to_string(w1_dir.join("w1.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.is_cut() {
        assert!(
            Instant::now() < deadline,
            "w1 never sent an outcome\n{}\n{}",
            w1_log(),
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, committed) = common::local_points(dir);
    assert_eq!(committed.len(), 1, "w1 committed its point first");
    // w2 takes the backup over once w1's lease runs out.
    processes.0.push(worker(dir, "w2", &[]));
    let status = processes.wait("coordinator", Duration::from_secs(120));
    let printed = std::fs::read_to_string(dir.join("coordinator.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}\n{}", logs(dir));
    let point = &committed[0].point_id;
    assert!(
        printed.contains(&format!(
            "point {point} was committed by worker w1 before its lease ran out; not backed up again"
        )),
        "{printed}"
    );
    let mut db = common::postgres::connect(&url).unwrap();
    let row = db
        .query_one("SELECT state, worker, attempt, recovered FROM work", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(row.get::<_, String>(1), "w2");
    assert_eq!(row.get::<_, i64>(2), 2);
    let recovered: String = row.get(3);
    assert!(
        recovered.contains(&format!("it had committed point {point}")),
        "{recovered}"
    );
    // One point, nothing left on the host.
    let (_, manifests) = common::local_points(dir);
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_no_snapshot(&lab_state(&lab));
    // The network heals: w1's outcome is not written over w2's.
    proxy.set_cut(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w1_log().contains("ended after its lease ran out") {
        assert!(Instant::now() < deadline, "{}", w1_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = db.query_one("SELECT worker FROM work", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "w2");
}

/// A copy no worker takes fails once `--action-timeout` has passed, and
/// the prune that retention chose counting that copy waits: the tier keeps
/// its older point rather than be left with none of the VM.
#[test]
fn a_copy_no_worker_takes_fails_and_its_prune_waits() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = lab_vcenter(dir, 1);
    let url = common::postgres::database();
    let second_tier = r#"
[tiers.offsite]
backend = "local"
path = "offsite"
site = "there"

[policies.all.retain.offsite]
last = 1
"#;
    write_policy(dir, &lab, &url, "", second_tier);
    let run = |args: &[&str]| {
        let o = common::in_policy_dir(dir, args);
        (o.status.code(), text(&o))
    };
    for tier in ["local", "offsite"] {
        assert_eq!(run(&["repo", "init", "--tier", tier]).0, Some(0));
    }
    // A first point, copied by a run on this machine; then a newer one.
    let (code, said) = run(&["apply", "--no-mail"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(&["backup", "lab-vm-01"]);
    assert_eq!(code, Some(0), "{said}");
    let (_, offsite) = common::points_at(&dir.join("offsite"));
    assert_eq!(offsite.len(), 1);
    let older = offsite[0].point_id.clone();

    // No worker runs.
    let (code, said) = run(&[
        "apply",
        "--distributed",
        "--no-mail",
        "--action-timeout",
        "2s",
    ]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("no worker took it within 2s"), "{said}");
    assert!(
        said.contains(&format!("prune lab-vm-01 {older} on offsite"))
            && said.contains(
                "deferred: a copy of a newer point of lab-vm-01 to tier `offsite` failed"
            ),
        "{said}"
    );
    let (_, offsite) = common::points_at(&dir.join("offsite"));
    let kept: Vec<&str> = offsite.iter().map(|m| m.point_id.as_str()).collect();
    assert_eq!(kept, [older.as_str()]);
    let mut db = common::postgres::connect(&url).unwrap();
    let row = db
        .query_one(
            "SELECT state, worker FROM work WHERE action::jsonb->>'action' = 'copy'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

/// Copies and drills go to the workers too. Each VM's new point is copied
/// to a second tier whose `max_parallel` is 1 and written slowly
/// (`bandwidth`), then drilled there; a worker is killed with SIGKILL in
/// the middle of a copy. Checked against the queue and the repositories:
/// every copy and drill was done by a worker, no two transfers of the tier
/// ever overlapped across workers, the copy the killed worker held was
/// done again by the other, and the second tier holds each VM's point
/// exactly once and verifies. A second run prunes the tier, and its gc
/// goes to a worker after the prune.
#[test]
fn copies_and_drills_are_handed_to_workers_within_the_tier_limit() {
    const COPIED: u32 = 4;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = lab_vcenter(dir, COPIED);
    let url = common::postgres::database();
    // The policy's table ends where the second tier's starts.
    let second_tier = r#"
[tiers.offsite]
backend = "local"
path = "offsite"
site = "there"
max_parallel = 1
bandwidth = "4MiB/s"

[policies.all.retain.offsite]
last = 1

[[policies.all.drills]]
name = "offsite-verify"
kind = "verify"
every = "7d"
tier = "offsite"
"#;
    write_policy(dir, &lab, &url, "", second_tier);
    init_tiers(dir, &["local", "offsite"]);
    let mut processes = Processes(vec![
        worker(dir, "w1", &[]),
        worker(dir, "w2", &[]),
        start(dir, "coordinator", &["apply", "--distributed", "--no-mail"]),
    ]);

    // Kill the first worker seen holding a copy.
    let mut db = common::postgres::connect(&url).unwrap();
    let (victim_vm, victim) = first_held(
        &mut db,
        dir,
        "copy",
        "a copy",
        Duration::from_secs(120),
        |_| true,
    );
    // `status` shows the copy its worker holds (the tier writes slowly:
    // the copy is still under way).
    let status = common::command_in(dir)
        .args(["status", "-p", "."])
        .output()
        .unwrap();
    let status = text(&status);
    assert!(
        status.contains(&format!("copy {victim_vm} to offsite (run ")),
        "{status}"
    );
    processes.kill(&victim);

    let status = processes.wait("coordinator", Duration::from_secs(240));
    let printed = std::fs::read_to_string(dir.join("coordinator.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}\n{}", logs(dir));
    assert!(printed.contains("copies, "), "{printed}");

    // The queue: every backup, copy and drill done by a worker.
    let rows = db
        .query(
            "SELECT action, vm, state, worker, attempt, started, finished, tier FROM work \
             ORDER BY seq",
            &[],
        )
        .unwrap();
    let kind = |r: &postgres::Row| -> String {
        let v: serde_json::Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
        v["action"].as_str().unwrap().to_string()
    };
    for wanted in ["backup", "copy", "drill"] {
        let of: Vec<&postgres::Row> = rows.iter().filter(|r| kind(r) == wanted).collect();
        assert_eq!(of.len(), COPIED as usize, "{wanted}s: {}", logs(dir));
        for r in &of {
            let (vm, state): (String, String) = (r.get(1), r.get(2));
            assert_eq!(state, "done", "{wanted} of {vm}\n{}", logs(dir));
            let worker: String = r.get(3);
            assert!(worker == "w1" || worker == "w2", "{worker}");
            if wanted == "copy" && vm == victim_vm {
                assert_ne!(worker, victim, "the killed worker's copy was done again");
                assert!(r.get::<_, i64>(4) >= 2);
            }
        }
    }
    // The tier limit across workers: the transfers of `offsite` (its
    // copies and drills) one at a time, never overlapping. The killed
    // worker's attempt has no end: its lease ran out before the next
    // claim of the row, which is where the other attempt starts.
    let mut spans: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.get::<_, String>(7) == "offsite")
        .map(|r| (r.get(5), r.get(6)))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two transfers of `offsite` at once: {pair:?}"
        );
    }

    // The second tier: each VM's point once, whole.
    let (_, local) = common::local_points(dir);
    let (_, offsite) = common::points_at(&dir.join("offsite"));
    let ids = |ms: &[coffer::repo::manifest::Manifest]| {
        let mut ids: Vec<String> = ms.iter().map(|m| m.point_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&offsite), ids(&local));
    assert_eq!(offsite.len(), COPIED as usize);
    assert_verifies(dir, "offsite");
    // The drills were recorded: the plan made now has none due.
    let plan = common::command_in(dir)
        .args(["plan", "--json", "-p", "."])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let due: Vec<&serde_json::Value> = (plan["actions"].as_array().unwrap().iter())
        .filter(|a| a["action"] == "drill" || a["action"] == "copy")
        .collect();
    assert!(due.is_empty(), "still due after the run: {due:?}");

    // A second run: a newer point of one VM is copied, the older one
    // pruned from `offsite` (it keeps one), and the tier's gc is handed
    // to the surviving worker after the prune.
    let backup = common::command_in(dir)
        .args(["backup", "lab-vm-01", "-p", "."])
        .output()
        .unwrap();
    assert!(backup.status.success(), "{}", text(&backup));
    processes.0.push(start(
        dir,
        "second",
        &["apply", "--distributed", "--no-mail"],
    ));
    let status = processes.wait("second", Duration::from_secs(120));
    let printed = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}\n{}", logs(dir));
    assert!(printed.contains("done - prune lab-vm-01"), "{printed}");
    let gc: Vec<(String, String)> = db
        .query(
            "SELECT state, worker FROM work WHERE action::jsonb->>'action' = 'gc'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let survivor = if victim == "w1" { "w2" } else { "w1" };
    assert_eq!(
        gc,
        [("done".to_string(), survivor.to_string())],
        "{printed}"
    );
    let (_, local) = common::local_points(dir);
    let (_, offsite) = common::points_at(&dir.join("offsite"));
    let newest = (local.iter().filter(|m| m.vm.name == "lab-vm-01"))
        .map(|m| m.point_id.clone())
        .max()
        .unwrap();
    let kept: Vec<&str> = (offsite.iter().filter(|m| m.vm.name == "lab-vm-01"))
        .map(|m| m.point_id.as_str())
        .collect();
    assert_eq!(kept, [newest.as_str()]);
    assert_verifies(dir, "offsite");
}

/// Wall time of a run of the lab (as a vCenter, its file service throttled
/// as a host's is) backed up by 1, 2 and 4 workers of one backup each,
/// beside one runner reading one and four backups at a time (`apply
/// --parallel 1|4`).
#[test]
#[ignore = "a benchmark: scripts/bench-workers.sh runs it"]
fn workers_bench() {
    let vms: u32 = common::bench_size("COFFER_BENCH_VMS", 16);
    // workers: 0 for one runner reading `parallel` backups at once.
    let run = |workers: usize, parallel: &str| -> f64 {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let mut config = LabConfig::new(dir.join("lab"));
        config.vms = vms;
        config.vcenter = true;
        config.password = Some("lab-pw".into());
        let lab = Lab::start(config).unwrap();
        lab.faults()
            .apply("folder-limit=2,folder-setup-ms=10,folder-mibps=400")
            .unwrap();
        let url = common::postgres::database();
        write_policy(
            dir,
            &lab,
            &url,
            &format!("max_per_host = {vms}\nmax_per_datastore = {vms}"),
            // No io_limit: it is a bucket per coffer process, so each
            // worker would bring its own.
            "",
        );
        let init = common::command_in(dir)
            .args(["repo", "init", "--tier", "local", "-p", "."])
            .output()
            .unwrap();
        assert!(init.status.success(), "{}", text(&init));
        let mut processes = Processes(Vec::new());
        for i in 0..workers {
            let name = format!("w{}", i + 1);
            processes.0.push(start(
                dir,
                &name,
                &["worker", "--name", &name, "--parallel", "1", "--poll", "1s"],
            ));
        }
        let args: &[&str] = if workers == 0 {
            &["apply", "--no-mail", "--parallel", parallel]
        } else {
            &["apply", "--no-mail", "--distributed"]
        };
        let started = Instant::now();
        processes.0.push(start(dir, "coordinator", args));
        let status = processes.wait("coordinator", Duration::from_secs(1800));
        let seconds = started.elapsed().as_secs_f64();
        let printed = std::fs::read_to_string(dir.join("coordinator.log")).unwrap();
        assert_eq!(status.code(), Some(0), "{printed}");
        assert_eq!(printed.matches("done + backup").count(), vms as usize);
        seconds
    };
    let one_runner = run(0, "1");
    let one_runner_4 = run(0, "4");
    let mut rows = Vec::new();
    for workers in [1, 2, 4] {
        rows.push((workers, run(workers, "1")));
    }
    println!(
        "{vms} lab VMs (vCenter, 2 hosts, file service folder-limit=2,folder-setup-ms=10,folder-mibps=400), full backups, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| runners | wall time | speed-up over 1 worker | per worker |");
    println!("|---|---|---|---|");
    println!("| apply --parallel 1 (one runner) | {one_runner:.1} s | | |");
    println!("| apply --parallel 4 (one runner) | {one_runner_4:.1} s | | |");
    let base = rows[0].1;
    for (workers, secs) in &rows {
        println!(
            "| {workers} worker(s) of 1 backup | {secs:.1} s | {:.2}x | {:.2}x |",
            base / secs,
            base / secs / *workers as f64
        );
    }
}
