//! Verification drills that prove a point can be recovered, with the
//! measured restore time:
//!
//! - `restore`: every disk restored to a scratch directory (each chunk's
//!   digest is checked on the way), then the policy's filesystem check on
//!   each disk image; the scratch files are deleted afterwards.
//! - `boot`: the point restored onto the drill host under a drill name, new
//!   UUIDs, network disconnected; powered on; the checks run (VMware Tools
//!   heartbeat, a TCP port, a script given the VM's name and address); then
//!   powered off and destroyed — on every path, including a failed check.
//!
//! The restore time (start to checks passed) is the measured RTO.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::policy::model::{Check, Drill};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::restore::{self, HostTarget, VmxChanges};
use crate::vsphere::Session;
use crate::vsphere::soap;
use crate::vsphere::types::MoRef;

/// What a drill found.
#[derive(Debug, Clone)]
pub struct DrillOutcome {
    pub ok: bool,
    /// What passed and what failed, in words.
    pub detail: String,
    /// Start to checks passed (None when the drill failed before).
    pub restore_seconds: Option<f64>,
}

impl DrillOutcome {
    fn failed(detail: String) -> DrillOutcome {
        DrillOutcome {
            ok: false,
            detail,
            restore_seconds: None,
        }
    }
}

/// Runs `command` (with `{image}` replaced) and says whether it passed.
fn run_check_command(command: &str, image: &Path, timeout: Duration) -> Result<(), String> {
    let cmd = command.replace("{image}", &image.display().to_string());
    run_with_timeout(
        std::process::Command::new("sh").args(["-c", &cmd]),
        timeout,
        &cmd,
    )
}

fn run_with_timeout(
    cmd: &mut std::process::Command,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{what}` could not start: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "`{what}` failed ({status}){}",
                    err.lines()
                        .next()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                ));
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{what}` did not finish within {}",
                    crate::policy::units::format_duration(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("`{what}`: {e}")),
        }
    }
}

/// The restore drill: restore to `scratch`, check, clean up.
pub fn restore_drill(
    repo: &Repository,
    m: &Manifest,
    drill: &Drill,
    scratch: &Path,
    threads: usize,
) -> DrillOutcome {
    let started = Instant::now();
    let dir = scratch.join(format!("{}-{}", drill.name, m.point_id));
    let changes = VmxChanges {
        name: format!("{}-drill", m.vm.name),
        ..VmxChanges::default()
    };
    let result = restore::restore_local(repo, m, &dir, &changes, None, true, threads)
        .map_err(|e| format!("restore failed: {e:#}"))
        .and_then(|r| {
            let restored = started.elapsed().as_secs_f64();
            let mut notes = vec![format!(
                "{} of disks restored and every chunk proven in {restored:.1}s",
                crate::policy::units::format_size(r.bytes)
            )];
            if let Some(fsck) = &drill.fsck {
                for f in r
                    .files
                    .iter()
                    .filter(|f| f.to_string_lossy().ends_with("-flat.vmdk"))
                {
                    run_check_command(fsck, f, drill.timeout)?;
                    notes.push(format!(
                        "`{fsck}` passed on {}",
                        f.file_name().unwrap_or_default().to_string_lossy()
                    ));
                }
            }
            Ok(notes.join("; "))
        });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(detail) => DrillOutcome {
            ok: true,
            detail,
            restore_seconds: Some(started.elapsed().as_secs_f64()),
        },
        Err(e) => DrillOutcome::failed(e),
    }
}

/// Powers the drill VM off and destroys it when dropped.
struct Teardown<'a> {
    session: &'a Session,
    vm: Option<MoRef>,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if let Some(vm) = self.vm.take() {
            let t = Duration::from_secs(600);
            let _ = self.session.run_task(&soap::power_off_vm(&vm), t);
            if let Err(e) = self.session.run_task(&soap::destroy(&vm), t) {
                eprintln!("coffer: removing drill VM {vm} failed: {e}; remove it by hand");
            }
        }
    }
}

fn wait_for_heartbeat(session: &Session, name: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let vms = session.list_vms().map_err(|e| e.to_string())?;
        let tools = vms
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.tools_running_status.clone());
        if tools.as_deref() == Some("guestToolsRunning") {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "no VMware Tools heartbeat within {} (tools: {})",
                crate::policy::units::format_duration(timeout),
                tools.as_deref().unwrap_or("unknown")
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Connects to the drill VM's `port` at the address its VMware Tools
/// reports, retrying until `timeout`.
fn wait_for_port(
    session: &Session,
    name: &str,
    port: u16,
    timeout: Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let mut last = "the VM reports no address".to_string();
    loop {
        let ip = session
            .list_vms()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|v| v.name == name)
            .and_then(|v| v.ip_address);
        if let Some(ip) = ip {
            let addr = format!("{ip}:{port}");
            match addr.parse::<std::net::SocketAddr>() {
                Ok(sa) => match std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
                    Ok(_) => return Ok(addr),
                    Err(e) => last = format!("{addr}: {e}"),
                },
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "TCP port {port} did not answer within {} ({last})",
                crate::policy::units::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The boot drill on `target` (the drill host).
pub fn boot_drill(
    repo: &Repository,
    m: &Manifest,
    drill: &Drill,
    target: &HostTarget<'_>,
    scratch: &Path,
    threads: usize,
) -> DrillOutcome {
    let started = Instant::now();
    let name = format!("{}-drill-{}", m.vm.name, drill.name);
    let changes = VmxChanges {
        name: name.clone(),
        new_uuid: true,
        disconnect_network: true,
    };
    let dir = scratch.join(&name);
    let restored = restore::restore_to_host(repo, m, target, &changes, true, &dir, threads);
    let _ = std::fs::remove_dir_all(&dir);
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            return DrillOutcome::failed(format!("restore onto the drill host failed: {e:#}"));
        }
    };
    let _teardown = Teardown {
        session: target.session,
        vm: Some(restored.vm.clone()),
    };
    let mut notes = vec![format!(
        "restored as {name} and powered on in {:.1}s",
        restored.seconds
    )];
    let checks: Vec<Check> = if drill.checks.is_empty() {
        vec![Check::Heartbeat {
            timeout: drill.timeout,
        }]
    } else {
        drill.checks.clone()
    };
    for check in &checks {
        let result = match check {
            Check::Heartbeat { timeout } => wait_for_heartbeat(target.session, &name, *timeout)
                .map(|()| "heartbeat".to_string()),
            Check::Tcp { port, timeout } => {
                wait_for_port(target.session, &name, *port, *timeout).map(|a| format!("TCP {a}"))
            }
            Check::Script { path, timeout } => run_with_timeout(
                std::process::Command::new(path)
                    .arg(&name)
                    .env("COFFER_DRILL_VM", &name)
                    .env("COFFER_DRILL_POINT", &m.point_id),
                *timeout,
                path,
            )
            .map(|()| format!("script {path}")),
        };
        match result {
            Ok(what) => notes.push(format!("{what} passed")),
            Err(e) => {
                notes.push(format!("FAILED: {e}"));
                return DrillOutcome::failed(notes.join("; "));
            }
        }
    }
    let rto = started.elapsed().as_secs_f64();
    notes.push(format!("recovered in {rto:.1}s"));
    DrillOutcome {
        ok: true,
        detail: notes.join("; "),
        restore_seconds: Some(rto),
    }
}
