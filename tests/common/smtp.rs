//! A real SMTP server for the tests (tests/smtp/server.py, aiosmtpd):
//! STARTTLS or implicit TLS with a CA of its own, AUTH required; every
//! message parsed and kept as JSON for the test to read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "coffer";

pub struct SmtpServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub ca: PathBuf,
    pub dir: PathBuf,
}

impl SmtpServer {
    /// Starts a server keeping messages in `dir`.
    pub fn start(dir: &Path, password: &str, implicit_tls: bool) -> SmtpServer {
        let mut cmd = Command::new("python3");
        cmd.arg(super::root().join("tests/smtp/server.py"))
            .arg("--dir")
            .arg(dir)
            .args(["--password", password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if implicit_tls {
            cmd.arg("--implicit");
        }
        let mut child = cmd
            .spawn()
            .expect("python3 runs tests/smtp/server.py (scripts/test-deps.sh installs aiosmtpd)");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the SMTP test server did not start ({e}: {line:?}); run scripts/test-deps.sh")
        });
        SmtpServer {
            child,
            stdin,
            port: info["port"].as_u64().unwrap() as u16,
            ca: PathBuf::from(info["ca"].as_str().unwrap()),
            dir: dir.to_path_buf(),
        }
    }

    /// The messages received so far (parsed), oldest first; waits up to
    /// `wait` for at least `at_least` of them.
    pub fn messages(&self, at_least: usize, wait: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + wait;
        loop {
            let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name
                        .strip_prefix("msg-")?
                        .strip_suffix(".json")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect();
            if found.len() >= at_least || Instant::now() > deadline {
                found.sort();
                return found
                    .into_iter()
                    .map(|(_, p)| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
