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

use crate::instant::export::PointExport;
use crate::instant::serve::{self, Server};
use crate::policy::model::{Check, Drill, DrillMethod};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::drill_network::{self, DrillNetwork};
use crate::run::guest_check::{self, Shell};
use crate::run::restore::{self, HostTarget, VmxChanges};
use crate::vsphere::Session;
use crate::vsphere::soap;
use crate::vsphere::types::{GuestAuth, MoRef};

/// What a drill found: two separate facts, the data (every chunk read
/// back and proven) and the guest checks (fsck, heartbeat, TCP, scripts).
/// Only the first says a copy is damaged; a failed guest check is an alert
/// and a compliance finding, never a reason to prune or to take a full.
#[derive(Debug, Clone)]
pub struct DrillOutcome {
    /// Everything passed.
    pub ok: bool,
    /// What passed and what failed, in words.
    pub detail: String,
    /// `Some(true)`: every chunk was read back and proven; `Some(false)`:
    /// the repository's data is damaged (a chunk or index missing or not
    /// matching its digest); `None`: the drill failed before it could tell
    /// (a host or scratch-disk problem).
    pub data_ok: Option<bool>,
    /// `None` when no guest check ran.
    pub guest_ok: Option<bool>,
    /// What the guest checks said, with a failing check's own output.
    pub guest_detail: Option<String>,
    /// Start to checks passed (None when the drill failed before).
    pub restore_seconds: Option<f64>,
    /// A boot drill: start to the guest's first heartbeat, when a
    /// heartbeat check ran and passed.
    pub heartbeat_seconds: Option<f64>,
    /// A boot drill: "restore" or "instant".
    pub method: Option<&'static str>,
}

/// Whether a failed restore failed on the repository's data (a chunk or an
/// index missing or damaged), not on the scratch disk or the host.
fn data_damaged(e: &anyhow::Error) -> bool {
    use crate::repo::RepoError;
    use crate::repo::store::StoreError;
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<RepoError>(),
            Some(
                RepoError::Chunk { .. }
                    | RepoError::Index { .. }
                    | RepoError::BadManifest { .. }
                    | RepoError::Store(StoreError::NotFound(_))
            )
        )
    })
}

/// The most of a check's own output a failure message carries.
const OUTPUT_LIMIT_BYTES: usize = 2000;

/// A check's output for a message: stderr then stdout, blank lines
/// dropped, lines joined with " / ", at most [`OUTPUT_LIMIT_BYTES`].
pub(crate) fn bounded_output(stderr: &[u8], stdout: &[u8], truncated: bool) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stderr),
        String::from_utf8_lossy(stdout)
    );
    let mut out = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    let mut cut = truncated;
    if out.len() > OUTPUT_LIMIT_BYTES {
        let mut end = OUTPUT_LIMIT_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        cut = true;
    }
    if cut {
        out.push_str(" …(output cut)");
    }
    out
}

/// Reads a pipe to its end on a thread, keeping its first bytes: a check
/// that writes more than a pipe holds must not block on it.
fn drain(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        if let Some(mut p) = pipe {
            let mut buf = [0u8; 8192];
            loop {
                match p.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = (OUTPUT_LIMIT_BYTES * 2).saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                        cut |= n > room;
                    }
                }
            }
        }
        (kept, cut)
    })
}

/// Where a file system check runs: one partition of a restored image.
struct CheckTarget<'a> {
    image: &'a Path,
    partition: u32,
    offset_bytes: u64,
    size_bytes: u64,
    fstype: &'a str,
}

/// `command` with its placeholders replaced: `{image}`, `{partition}`
/// (number, 0 for the whole disk), `{offset}` and `{size}` (bytes),
/// `{fstype}`.
fn expand_check(command: &str, t: &CheckTarget<'_>) -> String {
    command
        .replace("{image}", &t.image.display().to_string())
        .replace("{partition}", &t.partition.to_string())
        .replace("{offset}", &t.offset_bytes.to_string())
        .replace("{size}", &t.size_bytes.to_string())
        .replace("{fstype}", t.fstype)
}

/// Runs the check on one target and says whether it passed.
fn run_check_command(command: &str, t: &CheckTarget<'_>, timeout: Duration) -> Result<(), String> {
    let cmd = expand_check(command, t);
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
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{what}` could not start: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "`{what}` did not finish within {}",
                    crate::policy::units::format_duration(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(format!("`{what}`: {e}")),
        }
    };
    // The pipes close when the check and anything it started are gone; a
    // process the check left running keeps them open, so the output is
    // waited for a little, never for good.
    let output = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(stdout.is_finished() && stderr.is_finished()) {
            if Instant::now() >= deadline {
                return "(not read: a process the check started still holds it)".to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (err, err_cut) = stderr.join().unwrap_or_default();
        let (out, out_cut) = stdout.join().unwrap_or_default();
        bounded_output(&err, &out, err_cut || out_cut)
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let out = output();
            Err(format!(
                "`{what}` failed ({s}){}",
                if out.is_empty() {
                    String::new()
                } else {
                    format!("; its output: {out}")
                }
            ))
        }
        Err(e) => Err(e),
    }
}

/// Runs the file system check on every restored disk: on each partition
/// with a known file system when the disk has a partition table, on the
/// whole image otherwise. Every check runs; the result lists each.
fn check_disks(
    fsck: &str,
    files: &[std::path::PathBuf],
    timeout: Duration,
) -> Result<String, String> {
    use super::partition::{self, Layout};
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.to_string_lossy().ends_with("-flat.vmdk"))
    {
        let disk = f.file_name().unwrap_or_default().to_string_lossy();
        let layout = match partition::layout(f) {
            Ok(l) => l,
            Err(e) => {
                failed.push(format!("{disk}: reading its partition table: {e}"));
                continue;
            }
        };
        let (mut targets, skipped): (Vec<CheckTarget<'_>>, Vec<String>) = match &layout {
            Layout::WholeDisk(p) => (
                vec![CheckTarget {
                    image: f,
                    partition: 0,
                    offset_bytes: 0,
                    size_bytes: p.size_bytes,
                    fstype: p.fs.map(|k| k.as_str()).unwrap_or_default(),
                }],
                Vec::new(),
            ),
            // Neither a table nor a file system coffer knows: the whole
            // image, below.
            Layout::Unknown => (Vec::new(), Vec::new()),
            Layout::Table { partitions, .. } => {
                let (known, other): (Vec<_>, Vec<_>) =
                    partitions.iter().partition(|p| p.fs.is_some());
                (
                    known
                        .into_iter()
                        .map(|p| CheckTarget {
                            image: f,
                            partition: p.number,
                            offset_bytes: p.offset_bytes,
                            size_bytes: p.size_bytes,
                            fstype: p.fs.map(|k| k.as_str()).unwrap_or_default(),
                        })
                        .collect(),
                    other
                        .into_iter()
                        .map(|p| format!("partition {} ({})", p.number, p.table_type))
                        .collect(),
                )
            }
        };
        if targets.is_empty() {
            // A table without a file system coffer knows (LVM, a guest's
            // own format): the check gets the whole image, as it asked,
            // rather than nothing being checked.
            targets.push(CheckTarget {
                image: f,
                partition: 0,
                offset_bytes: 0,
                size_bytes: std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
                fstype: "",
            });
        }
        if !skipped.is_empty() {
            passed.push(format!(
                "{disk}: {} not checked (no file system coffer knows)",
                skipped.join(", ")
            ));
        }
        for t in &targets {
            let place = if t.partition == 0 {
                format!("{disk} (whole image)")
            } else {
                format!(
                    "{disk} partition {} ({}, offset {})",
                    t.partition, t.fstype, t.offset_bytes
                )
            };
            match run_check_command(fsck, t, timeout) {
                Ok(()) => passed.push(format!("`{fsck}` passed on {place}")),
                Err(e) => {
                    let hint = if t.offset_bytes != 0
                        && !fsck.contains("{offset}")
                        && !fsck.contains("{partition}")
                    {
                        " (the disk has a partition table: give the check `{offset}` or `{partition}`, e.g. `e2fsck -fn '{image}?offset={offset}'`)"
                    } else {
                        ""
                    };
                    failed.push(format!("{place}: {e}{hint}"));
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(passed.join("; "))
    } else {
        Err(format!(
            "file system check FAILED on {}{}",
            failed.join("; "),
            if passed.is_empty() {
                String::new()
            } else {
                format!("; {}", passed.join("; "))
            }
        ))
    }
}

/// The restore drill: restore to `scratch` (every chunk proven: the data
/// fact), then the file system check (a guest fact), then clean up.
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
    let outcome = match restore::restore_local(repo, m, &dir, &changes, None, true, threads, None) {
        Err(e) => DrillOutcome {
            ok: false,
            detail: format!("restore failed: {e:#}"),
            data_ok: data_damaged(&e).then_some(false),
            guest_ok: None,
            guest_detail: None,
            restore_seconds: None,
            heartbeat_seconds: None,
            method: None,
        },
        Ok(r) => {
            let restored = started.elapsed().as_secs_f64();
            let data = format!(
                "data verified: {} of disks restored and every chunk proven in {restored:.1}s",
                crate::policy::units::format_size(r.bytes)
            );
            let guest = drill
                .fsck
                .as_ref()
                .map(|fsck| check_disks(fsck, &r.files, drill.timeout));
            let guest_ok = guest.as_ref().map(Result::is_ok);
            let guest_detail = guest.map(|g| match g {
                Ok(s) | Err(s) => s,
            });
            let ok = guest_ok != Some(false);
            DrillOutcome {
                ok,
                detail: match &guest_detail {
                    Some(g) if ok => format!("{data}; guest check: {g}"),
                    Some(g) => format!("guest check failed: {g}; {data}"),
                    None => data,
                },
                data_ok: Some(true),
                guest_ok,
                guest_detail,
                restore_seconds: ok.then(|| started.elapsed().as_secs_f64()),
                heartbeat_seconds: None,
                method: None,
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    outcome
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

/// An instant drill's VM, datastore and NFS server: when dropped, the VM
/// is powered off and unregistered (its files are the export's), the
/// datastore unmounted, then the server stopped and its overlay removed.
struct InstantUp<'a> {
    session: &'a Session,
    host: MoRef,
    vm: Option<MoRef>,
    datastore: Option<MoRef>,
    server: Option<Server>,
    overlay: Option<tempfile::TempDir>,
}

impl Drop for InstantUp<'_> {
    fn drop(&mut self) {
        let t = Duration::from_secs(600);
        if let Some(vm) = self.vm.take() {
            let _ = self.session.run_task(&soap::power_off_vm(&vm), t);
            if let Err(e) = self.session.call_empty(&soap::unregister_vm(&vm)) {
                eprintln!("coffer: unregistering drill VM {vm} failed: {e}; remove it by hand");
            }
        }
        if let Some(ds) = self.datastore.take()
            && let Err(e) = self.session.remove_datastore(&self.host, &ds)
        {
            eprintln!("coffer: unmounting drill datastore {ds} failed: {e}; remove it by hand");
        }
        drop(self.server.take());
        drop(self.overlay.take());
    }
}

/// Boots the point straight from the repository on `target`'s host: served
/// over NFS on `listen`, mounted as datastore `coffer-<VM>`, registered and
/// powered on. What it made is removed when the answer's guard drops.
fn instant_up<'a>(
    repo: &Repository,
    m: &Manifest,
    target: &HostTarget<'a>,
    changes: &VmxChanges,
    listen: std::net::IpAddr,
    scratch: &Path,
) -> anyhow::Result<(InstantUp<'a>, MoRef)> {
    let overlay = tempfile::tempdir_in(scratch).or_else(|_| tempfile::tempdir())?;
    let export = PointExport::new(repo.clone(), m, changes, overlay.path())?;
    let name = format!("coffer-{}", changes.name);
    let server = serve::serve(
        export,
        &name,
        listen,
        &[serve::PORTMAP_PORT, serve::NFS_PORT],
    )?;
    let mut up = InstantUp {
        session: target.session,
        host: target.host.clone(),
        vm: None,
        datastore: None,
        server: Some(server),
        overlay: Some(overlay),
    };
    up.datastore = Some(target.session.create_nas_datastore(
        &target.host,
        &listen.to_string(),
        &format!("/{name}"),
        &name,
    )?);
    let on_nas = HostTarget {
        datastore: &name,
        ..target.clone()
    };
    let vm = restore::register_on_host(&on_nas, &changes.name, None)?;
    up.vm = Some(vm.clone());
    target
        .session
        .power_on_answering(&vm, !changes.new_uuid, Duration::from_secs(600))?;
    Ok((up, vm))
}

/// What keeps a boot drill's VM up until the checks are done.
enum Up<'a> {
    Restored(#[allow(dead_code)] Teardown<'a>),
    Instant(#[allow(dead_code)] Box<InstantUp<'a>>),
}

pub(crate) fn wait_for_heartbeat(
    session: &Session,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
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

/// The `guestOS` of the point's .vmx, when it kept one.
fn guest_os(repo: &Repository, m: &Manifest) -> Option<String> {
    let (name, _) = m.files.iter().find(|(n, _)| n.ends_with(".vmx"))?;
    let text = repo.read_file(m, name).ok()?;
    crate::vsphere::vmx::value(&String::from_utf8_lossy(&text), "guestOS").map(str::to_string)
}

/// The address VMware Tools reports for the VM `name`, if any.
fn reported_ip(session: &Session, name: &str) -> Result<Option<String>, String> {
    Ok(session
        .list_vms()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|v| v.name == name)
        .and_then(|v| v.ip_address))
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
        if let Some(ip) = reported_ip(session, name)? {
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
    // The network first, so nothing is restored for a drill that could
    // meet production; dropped after the VM (declared before it).
    let wanted = DrillNetwork::from_policy(drill.network.as_deref());
    let network = match drill_network::prepare(target.session, &target.host, &wanted) {
        Ok(n) => n,
        Err(e) => {
            return DrillOutcome {
                ok: false,
                detail: format!("the drill network is not ready, nothing was restored: {e}"),
                data_ok: None,
                guest_ok: None,
                guest_detail: None,
                restore_seconds: None,
                heartbeat_seconds: None,
                method: None,
            };
        }
    };
    let changes = VmxChanges {
        name: name.clone(),
        new_uuid: true,
        network: Some(network.port_group.clone()),
        ..VmxChanges::default()
    };
    let failed = |detail: String, data_ok: Option<bool>| DrillOutcome {
        ok: false,
        detail,
        data_ok,
        guest_ok: None,
        guest_detail: None,
        restore_seconds: None,
        heartbeat_seconds: None,
        method: None,
    };
    let (vm, _up, mut notes) = match drill.method {
        DrillMethod::Restore => {
            let dir = scratch.join(&name);
            let restored = restore::restore_to_host(&restore::ToHost {
                repo,
                m,
                target,
                changes: &changes,
                power_on: true,
                scratch: &dir,
                threads,
                progress: None,
                stop: None,
            });
            let _ = std::fs::remove_dir_all(&dir);
            match restored {
                Ok(r) => (
                    r.vm.clone(),
                    Up::Restored(Teardown {
                        session: target.session,
                        vm: Some(r.vm),
                    }),
                    vec![format!(
                        "restored as {name} and powered on in {:.1}s; {}",
                        r.seconds, network.note
                    )],
                ),
                Err(e) => {
                    return failed(
                        format!("restore onto the drill host failed: {e:#}"),
                        data_damaged(&e).then_some(false),
                    );
                }
            }
        }
        DrillMethod::Instant { listen } => {
            let listen = listen.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            match instant_up(repo, m, target, &changes, listen, scratch) {
                Ok((up, vm)) => (
                    vm,
                    Up::Instant(Box::new(up)),
                    vec![format!(
                        "booted {name} from the repository over NFS ({listen}), powered on in {:.1}s; {}",
                        started.elapsed().as_secs_f64(),
                        network.note
                    )],
                ),
                Err(e) => {
                    return failed(
                        format!("instant boot on the drill host failed: {e:#}"),
                        None,
                    );
                }
            }
        }
    };
    let instant = matches!(_up, Up::Instant(_));
    let method = Some(if instant { "instant" } else { "restore" });
    let mut heartbeat = None;
    // Guest checks, and TCP checks when the drill has guest credentials,
    // run inside the guest: coffer needs no route into the drill network.
    let guest = drill.guest_user.as_ref().map(|user| {
        let password = drill
            .guest_password
            .as_ref()
            .map(|p| p.read())
            .transpose()?
            .unwrap_or_default();
        Ok::<_, String>(GuestAuth {
            user: user.clone(),
            password,
        })
    });
    let shell = Shell::of_guest_os(guest_os(repo, m).as_deref());
    let in_guest = |command: &str, timeout: Duration| match &guest {
        Some(Ok(auth)) => guest_check::run(target.session, &vm, auth, shell, command, timeout),
        Some(Err(e)) => Err(format!("the guest password: {e}")),
        None => Err("a guest check needs the drill's guest_user and guest_password".into()),
    };
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
                .map(|()| {
                    heartbeat.get_or_insert(started.elapsed().as_secs_f64());
                    "heartbeat".to_string()
                }),
            // With guest credentials, against the VM's own address from
            // inside it (its loopback when Tools report none).
            Check::Tcp { port, timeout } if guest.is_some() => {
                let addr = reported_ip(target.session, &name)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "127.0.0.1".into());
                in_guest(&shell.tcp_probe(&addr, *port), *timeout)
                    .map(|()| format!("TCP {addr}:{port} from inside the guest"))
            }
            Check::Tcp { port, timeout } => {
                wait_for_port(target.session, &name, *port, *timeout).map(|a| format!("TCP {a}"))
            }
            Check::Guest { command, timeout } => {
                in_guest(command, *timeout).map(|()| format!("guest `{command}`"))
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
                let guest = format!("guest check failed: {}", notes[1..].join("; "));
                let data = if instant {
                    "data read only as the guest needed it"
                } else {
                    "data verified"
                };
                return DrillOutcome {
                    ok: false,
                    detail: format!("{guest}; {data}: {}", notes[0]),
                    // An instant boot reads what the guest asks for, not
                    // every chunk: it proves no data either way.
                    data_ok: (!instant).then_some(true),
                    guest_ok: Some(false),
                    guest_detail: Some(notes[1..].join("; ")),
                    restore_seconds: None,
                    heartbeat_seconds: heartbeat,
                    method,
                };
            }
        }
    }
    let rto = started.elapsed().as_secs_f64();
    if let Some(h) = heartbeat {
        notes.push(format!("heartbeat after {h:.1}s"));
    }
    notes.push(format!("recovered in {rto:.1}s"));
    DrillOutcome {
        ok: true,
        detail: notes.join("; "),
        data_ok: (!instant).then_some(true),
        guest_ok: Some(true),
        guest_detail: Some(notes[1..notes.len() - 1].join("; ")),
        restore_seconds: Some(rto),
        heartbeat_seconds: heartbeat,
        method,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(image: &Path) -> CheckTarget<'_> {
        CheckTarget {
            image,
            partition: 2,
            offset_bytes: 1048576,
            size_bytes: 4096,
            fstype: "ext4",
        }
    }

    #[test]
    fn a_failed_check_shows_its_own_output_not_only_its_first_line() {
        let image = Path::new("/nonexistent/disk-flat.vmdk");
        let err = run_check_command(
            "echo 'checker 1.0' >&2; echo 'bad magic in {image} at {offset}' >&2; echo 'try -b 8193'; exit 8",
            &whole(image),
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(err.contains("exit status: 8"), "{err}");
        assert!(
            err.contains(
                "checker 1.0 / bad magic in /nonexistent/disk-flat.vmdk at 1048576 / try -b 8193"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_check_that_writes_without_end_is_bounded_and_never_blocks() {
        let err = run_check_command(
            "head -c 5000000 /dev/zero | tr '\\0' x; echo; exit 1",
            &whole(Path::new("/x")),
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(err.len() < OUTPUT_LIMIT_BYTES + 500, "{} bytes", err.len());
        assert!(err.ends_with("…(output cut)"), "{}", &err[err.len() - 40..]);
    }

    #[test]
    fn every_placeholder_of_a_check_is_replaced() {
        let t = whole(Path::new("/s/d-flat.vmdk"));
        assert_eq!(
            expand_check(
                "c '{image}?offset={offset}' {partition} {size} {fstype}",
                &t
            ),
            "c '/s/d-flat.vmdk?offset=1048576' 2 4096 ext4"
        );
    }
}
