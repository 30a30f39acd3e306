//! `coffer daemon --metrics`: Prometheus metrics scraped over HTTP while a
//! run is in progress and after it, checked by `promtool check metrics`
//! (Debian's prometheus package), and `coffer status` telling what the
//! daemon does.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::metrics::{get, promtool_accepts, sample};
use common::{command_in, in_policy_dir, one_vm_lab, snapshot_count, stdout, text};

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(dir: &Path) -> (Option<i32>, String) {
    let o = in_policy_dir(dir, &["status"]);
    (o.status.code(), stdout(&o))
}

#[test]
fn the_daemon_serves_metrics_promtool_accepts_during_and_after_a_run() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    one_vm_lab(dir);
    let (code, out) = status(dir);
    assert_eq!(code, Some(3), "no daemon yet: {out}");

    // Reads throttled to 4 MiB/s: the first full (~30 MiB) runs for
    // seconds, long enough to scrape it in progress.
    let mut daemon = command_in(dir)
        .args(["daemon", "-p", ".", "--no-mail", "--metrics", "127.0.0.1:0"])
        .env("COFFER_LAB_FAULTS", "folder-mibps=4")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(daemon.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("coffer daemon: metrics at http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the daemon says where its metrics are: {first:?}"))
        .to_string();
    // The rest of stderr is drained so the daemon never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
    });

    // In progress: the backup is running and holds its snapshot.
    let mut during = String::new();
    wait_until("a backup in progress", Duration::from_secs(60), || {
        during = get(&addr, "/metrics").1;
        sample(&during, "coffer_actions_running{action=\"backup\"}") == Some(1.0)
            && sample(&during, "coffer_snapshots_open") == Some(1.0)
    });
    assert_eq!(sample(&during, "coffer_run_in_progress"), Some(1.0));
    promtool_accepts(&during);
    let (code, now) = status(dir);
    assert_eq!(code, Some(0), "{now}");
    assert!(now.contains("daemon: running"), "{now}");
    assert!(now.contains("1 running"), "{now}");
    assert!(now.contains("+ backup lab-vm-01"), "{now}");
    assert!(
        now.contains(&format!("metrics: http://{addr}/metrics")),
        "{now}"
    );

    // After: one successful run, the backup's result and bytes, no
    // snapshot open, the next run known.
    let mut after = String::new();
    wait_until("the run to end", Duration::from_secs(120), || {
        after = get(&addr, "/metrics").1;
        sample(&after, "coffer_runs_total{result=\"success\"}") == Some(1.0)
            && sample(&after, "coffer_next_run_timestamp_seconds").is_some()
    });
    promtool_accepts(&after);
    let vm = "{vm=\"lab-vm-01\",policy=\"all\"}";
    assert_eq!(
        sample(&after, &format!("coffer_backup_last_result{vm}")),
        Some(1.0)
    );
    assert!(
        sample(
            &after,
            &format!("coffer_backup_last_success_timestamp_seconds{vm}")
        )
        .unwrap()
            > 1.7e9
    );
    let read = sample(&after, "coffer_backup_read_bytes_total{vm=\"lab-vm-01\"}").unwrap();
    assert!(read > 1e6, "{after}");
    assert!(sample(&after, "coffer_backup_stored_bytes_total{vm=\"lab-vm-01\"}").unwrap() > 0.0);
    assert_eq!(sample(&after, "coffer_snapshots_open"), Some(0.0));
    assert_eq!(sample(&after, "coffer_run_in_progress"), Some(0.0));
    assert_eq!(
        sample(
            &after,
            "coffer_actions_total{action=\"backup\",result=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "coffer_action_duration_seconds_count{action=\"backup\"}"
        ),
        Some(1.0)
    );
    // The standing after the run: production and the new point.
    assert_eq!(sample(&after, &format!("coffer_vm_copies{vm}")), Some(2.0));
    assert!(
        sample(
            &after,
            &format!("coffer_vm_newest_good_point_timestamp_seconds{vm}")
        )
        .is_some()
    );
    assert_eq!(snapshot_count(dir), 0, "no snapshot is left on the host");
    let (_, now) = status(dir);
    assert!(now.contains("now: sleeping; next run"), "{now}");
    assert!(now.contains(" success "), "{now}");

    let (line, _) = get(&addr, "/nothing");
    assert!(line.contains("404"), "{line}");

    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    let _ = daemon.wait().unwrap();
    let (code, now) = status(dir);
    assert_eq!(code, Some(3), "{now}");
    assert!(now.contains("daemon: not running"), "{now}");
}

/// A loopback HTTP server that records each request's method, path and
/// body, and answers 200.
struct PingServer {
    addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl PingServer {
    fn start() -> PingServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut parts = line.split_whitespace();
                record.lock().unwrap().push((
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let mut conn = conn;
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
        PingServer { addr, seen }
    }

    fn take(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[test]
fn every_run_pings_the_healthcheck_at_start_and_with_its_result() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    one_vm_lab(dir);
    let server = PingServer::start();
    let toml = dir.join("coffer.toml");
    let mut text_of = std::fs::read_to_string(&toml).unwrap();
    text_of.push_str(&format!(
        "\n[settings]\nhealthcheck_url = \"http://{}/ping/site-a\"\n",
        server.addr
    ));
    std::fs::write(&toml, text_of).unwrap();

    let o = in_policy_dir(dir, &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    let run_id = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("run ").map(str::to_string))
        .unwrap();
    let pings = server.take();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_eq!(
        (pings[0].0.as_str(), pings[0].1.as_str()),
        ("POST", "/ping/site-a/start")
    );
    assert!(pings[0].2.contains(&run_id), "{pings:?}");
    assert_eq!(
        (pings[1].0.as_str(), pings[1].1.as_str()),
        ("POST", "/ping/site-a")
    );
    assert!(pings[1].2.contains(&run_id) && pings[1].2.contains("lab-vm-01"));

    // Nothing is due now: the run succeeds and says so.
    let o = in_policy_dir(dir, &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    let pings = server.take();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_eq!(pings[1].1, "/ping/site-a");
    // A backup outside apply is not a run of the installation.
    let o = in_policy_dir(dir, &["backup", "lab-vm-01"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        server.take().is_empty(),
        "a backup outside apply pings nothing"
    );
}

fn lab_pinging(url: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    one_vm_lab(t.path());
    let toml = t.path().join("coffer.toml");
    let mut text_of = std::fs::read_to_string(&toml).unwrap();
    text_of.push_str(&format!("\n[settings]\nhealthcheck_url = \"{url}\"\n"));
    std::fs::write(&toml, text_of).unwrap();
    t
}

#[test]
fn a_failed_run_pings_fail_and_a_dead_healthcheck_changes_nothing() {
    let server = PingServer::start();
    let t = lab_pinging(&format!("http://{}/ping/site-b/", server.addr));
    // The host refuses snapshots: the backup fails, the run fails.
    let o = command_in(t.path())
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_LAB_FAULTS", "snapshot")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let pings = server.take();
    let paths: Vec<&str> = pings.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(paths, ["/ping/site-b/start", "/ping/site-b/fail"]);
    assert!(pings[1].2.contains("failed"), "{pings:?}");

    // Nobody listens at the healthcheck: the run is what it would be.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ping", closed.local_addr().unwrap());
    drop(closed);
    let t = lab_pinging(&url);
    let o = in_policy_dir(t.path(), &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        common::stderr(&o).contains("healthcheck ping to"),
        "{}",
        text(&o)
    );
    let (_, points) = common::local_points(t.path());
    assert_eq!(points.len(), 1, "the backup was taken");
}
