//! Instant recovery sessions (see `crate::instant`): start one (serve the
//! point, mount it on the host, register and power on the VM, wait for its
//! heartbeat), list them, and stop one (power off, unregister, unmount,
//! stop the server, drop the overlay).
//!
//! Each step on the host is recorded in the session file before the next
//! one starts, and a start that fails undoes what it did: whatever happens,
//! `stop` can remove what a session left on the host.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;

use super::restore::PointChoice;
use crate::instant::export::PointExport;
use crate::instant::serve;
use crate::instant::session::{self, Session};
use crate::policy::Config;
use crate::policy::model::SourceKind;
use crate::run::connect::{self, Connected};
use crate::run::restore::{self, HostTarget, PlaceNames, VmxChanges};
use crate::vsphere::soap;

/// How long the NFS server may take to listen.
const SERVER_START: Duration = Duration::from_secs(60);
/// How long the host's tasks may take.
const TASK: Duration = Duration::from_secs(600);

/// What `coffer instant-recover VM` asks for: its arguments, but for the VM,
/// where on a vCenter it goes, and the program that serves it.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// The VM whose point to boot.
    #[arg(skip)]
    pub vm: String,
    #[command(flatten)]
    pub choice: PointChoice,
    /// The source (ESXi host) to run the VM on (default: the VM's own).
    #[arg(long)]
    pub to_source: Option<String>,
    /// On a vCenter, where (host, folder, pool; each by default when not
    /// named).
    #[arg(skip)]
    pub place: PlaceNames,
    /// The recovered VM's name (default: VM-instant).
    #[arg(long)]
    pub name: Option<String>,
    /// This machine's address that the host reaches for NFS, ports 111
    /// and 2049 (default: 127.0.0.1 for the built-in lab).
    #[arg(long = "listen")]
    pub address: Option<IpAddr>,
    /// Connect every network card to this port group.
    #[arg(long, conflicts_with = "disconnect_network")]
    pub network: Option<String>,
    /// Network cards start disconnected.
    #[arg(long)]
    pub disconnect_network: bool,
    /// New BIOS UUID and MAC addresses (the original still runs).
    #[arg(long)]
    pub new_uuid: bool,
    /// How long to wait for the guest's VMware Tools heartbeat.
    #[arg(long, default_value = "10m", value_parser = crate::policy::units::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// The coffer binary that runs the NFS server (`instant-recover
    /// serve`).
    #[arg(skip)]
    pub server_program: PathBuf,
}

/// A started session and its figures.
#[derive(Debug)]
pub struct Started {
    pub session: Session,
    pub seconds_to_power_on: f64,
    pub seconds_to_heartbeat: f64,
    /// Why the recovery could not be recorded in the catalog, if so.
    pub not_recorded: Option<String>,
}

/// A session as `list` shows it.
#[derive(Debug)]
pub struct Listed {
    pub session: Session,
    pub server_running: bool,
    pub overlay_bytes: u64,
}

fn source_of<'c>(config: &'c Config, name: &str) -> Result<&'c crate::policy::model::Source> {
    config
        .sources
        .get(name)
        .ok_or_else(|| anyhow!("no source named `{name}`"))
}

/// Starts a session: see the module's documentation.
pub fn start(config: &Config, policies: &Path, a: &StartArgs) -> Result<Started> {
    let began = Instant::now();
    let (tier, _repo, m) = a.choice.find(config, &a.vm)?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-instant", a.vm));
    crate::repo::ids::FileStem::parse(&name).map_err(|e| {
        anyhow!("the recovered VM's name cannot be used: {e}; choose another --name")
    })?;
    let source_name = a
        .to_source
        .clone()
        .or_else(|| m.vm.source.clone())
        .or_else(|| (config.sources.len() == 1).then(|| config.sources.keys().next().cloned())?)
        .ok_or_else(|| anyhow!("name the host to run the VM on with --to-source"))?;
    let source = source_of(config, &source_name)?;
    let address = match (a.address, &source.kind) {
        (Some(ip), _) => ip,
        (None, SourceKind::Lab) => IpAddr::from([127, 0, 0, 1]),
        (None, _) => bail!(
            "give --listen ADDRESS: the address of this machine that the host reaches for NFS (ports 111 and 2049)"
        ),
    };
    let state_dir = &config.settings.state_dir;
    let dir = session::session_dir(state_dir, &name);
    if dir.exists() {
        bail!(
            "an instant-recovery session named `{name}` exists; stop it first (coffer instant-recover stop {name})"
        );
    }
    let conn = connect::connect(source, state_dir)?;
    if conn.vm(&name).is_ok() {
        bail!("a VM named `{name}` exists on source `{source_name}`; choose another --name");
    }
    let datastore = format!("coffer-{name}");
    let mut s = Session {
        name: name.clone(),
        vm: a.vm.clone(),
        point: m.point_id.clone(),
        tier,
        source: source_name,
        place: a.place.clone(),
        host_ref: None,
        address: address.to_string(),
        export: format!("/{datastore}"),
        datastore: datastore.clone(),
        new_uuid: a.new_uuid,
        network: a.network.clone(),
        disconnect_network: a.disconnect_network,
        started: Utc::now(),
        pid: None,
        datastore_ref: None,
        vm_ref: None,
        heartbeat_seconds: None,
    };
    session::save(&dir, &s)?;
    let result = bring_up(&conn, &dir, &mut s, a, policies, began);
    match result {
        Ok((on, beat)) => {
            let recovery = crate::catalog::Recovery {
                vm_uuid: m.vm.uuid.clone(),
                vm_name: m.vm.name.clone(),
                point_id: m.point_id.clone(),
                tier: s.tier.clone(),
                source: s.source.clone(),
                name: s.name.clone(),
                method: "instant".into(),
                started: s.started,
                power_on_seconds: Some(on),
                heartbeat_seconds: Some(beat),
            };
            let not_recorded = super::restore::record_recovery(config, &recovery).err();
            Ok(Started {
                session: s,
                seconds_to_power_on: on,
                seconds_to_heartbeat: beat,
                not_recorded: not_recorded.map(|e| format!("{e:#}")),
            })
        }
        Err(e) => {
            if let Err(undo) = tear_down(&conn, &dir, &mut s) {
                return Err(e.context(format!(
                    "undoing the session also failed ({undo:#}); run `coffer instant-recover stop {name}`"
                )));
            }
            Err(e)
        }
    }
}

/// The steps of a start after the session was recorded; answers the
/// seconds to power-on and to the first heartbeat.
fn bring_up(
    conn: &Connected,
    dir: &Path,
    s: &mut Session,
    a: &StartArgs,
    policies: &Path,
    began: Instant,
) -> Result<(f64, f64)> {
    // The NFS server, in a process of its own that outlives this command.
    let log = std::fs::File::create(session::log_file(dir))?;
    let mut cmd = std::process::Command::new(&a.server_program);
    cmd.arg("instant-recover")
        .arg("serve")
        .arg("--session-dir")
        .arg(dir)
        .arg("-p")
        .arg(policies)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: a Ctrl-C meant for this command does not stop
    // the server of a VM that runs from it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("starting the NFS server")?;
    s.pid = Some(child.id());
    session::save(dir, s)?;
    let waited = Instant::now();
    while !session::ready_file(dir).exists() {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(session::log_file(dir)).unwrap_or_default();
            bail!("the NFS server stopped ({status}): {}", log.trim());
        }
        if waited.elapsed() > SERVER_START {
            bail!("the NFS server did not listen within {SERVER_START:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = HostTarget::of_source(conn, &s.datastore, &s.place)?;
    s.host_ref = Some((target.host.kind.clone(), target.host.value.clone()));
    let ds = target
        .session
        .create_nas_datastore(&target.host, &s.address, &s.export, &s.datastore)
        .with_context(|| {
            format!(
                "mounting {}:{} on the host as datastore {}",
                s.address, s.export, s.datastore
            )
        })?;
    s.datastore_ref = Some((ds.kind.clone(), ds.value.clone()));
    session::save(dir, s)?;
    let vm = restore::register_on_host(&target, &s.name, None)?;
    s.vm_ref = Some((vm.kind.clone(), vm.value.clone()));
    session::save(dir, s)?;
    // The VM's files are in a new place: "I moved it" keeps its identity,
    // "I copied it" when a new UUID was asked for.
    target.session.power_on_answering(&vm, !s.new_uuid, TASK)?;
    let on = began.elapsed().as_secs_f64();
    crate::run::drill::wait_for_heartbeat(target.session, &s.name, a.heartbeat_timeout)
        .map_err(|e| anyhow!("{}: {e}", s.name))?;
    let beat = began.elapsed().as_secs_f64();
    s.heartbeat_seconds = Some(beat);
    session::save(dir, s)?;
    Ok((on, beat))
}

/// Removes what session `s` made, newest first, recording each step.
fn tear_down(conn: &Connected, dir: &Path, s: &mut Session) -> Result<()> {
    let host = s.host_moref();
    if let Some(vm) = s.vm_moref() {
        // Powered off already is fine; gone already is fine.
        let _ = conn.session.run_task(&soap::power_off_vm(&vm), TASK);
        match conn.session.call_empty(&soap::unregister_vm(&vm)) {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e).context(format!("unregistering {}", s.name)),
        }
        s.vm_ref = None;
        session::save(dir, s)?;
    }
    if let Some(ds) = s.datastore_moref() {
        match conn.session.remove_datastore(&host, &ds) {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e).context(format!("unmounting datastore {}", s.datastore)),
        }
        s.datastore_ref = None;
        session::save(dir, s)?;
    }
    if let Some(pid) = s.pid {
        stop_server(pid);
        s.pid = None;
        session::save(dir, s)?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn is_gone(e: &crate::vsphere::Error) -> bool {
    matches!(
        e.fault(),
        Some(crate::vsphere::fault::VimFault::ManagedObjectNotFound { .. })
    ) || e.to_string().contains("NotFound")
}

/// Stops the NFS server: SIGTERM, then SIGKILL after ten seconds.
fn stop_server(pid: u32) {
    if !session::alive(pid) {
        return;
    }
    // SAFETY: signalling a process we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    while session::alive(pid) && !is_zombie(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if session::alive(pid) && !is_zombie(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// A process that exited but was not yet reaped by its parent (a server
/// started by this very process, in tests) counts as stopped.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The sessions under the state directory.
pub fn list(config: &Config) -> Result<Vec<Listed>> {
    Ok(session::list(&config.settings.state_dir)?
        .into_iter()
        .map(|(dir, s)| Listed {
            server_running: s.pid.is_some_and(|p| session::alive(p) && !is_zombie(p)),
            overlay_bytes: PointExport::overlay_bytes(&session::overlay_dir(&dir)),
            session: s,
        })
        .collect())
}

/// What `stop` removed.
#[derive(Debug)]
pub struct Stopped {
    pub session: Session,
    pub overlay_bytes: u64,
}

/// Stops session `name`: the VM powered off and unregistered, the
/// datastore unmounted, the server stopped, the overlay dropped.
pub fn stop(config: &Config, name: &str) -> Result<Stopped> {
    let dir = session::session_dir(&config.settings.state_dir, name);
    if !dir.join("session.json").exists() {
        bail!("no instant-recovery session named `{name}` (coffer instant-recover list)");
    }
    let mut s = session::load(&dir)?;
    let overlay_bytes = PointExport::overlay_bytes(&session::overlay_dir(&dir));
    let conn = connect::connect(source_of(config, &s.source)?, &config.settings.state_dir)?;
    tear_down(&conn, &dir, &mut s)?;
    Ok(Stopped {
        session: s,
        overlay_bytes,
    })
}

/// What `migrate` did.
#[derive(Debug)]
pub struct Migrated {
    pub session: Session,
    /// The production datastore the VM now lives on.
    pub datastore: String,
    pub bytes_copied: u64,
    /// From the instant VM's power-off to the migrated VM's power-on.
    pub downtime_seconds: f64,
    /// Moved by Storage vMotion (through a vCenter), running throughout.
    pub storage_vmotion: bool,
}

/// Files of a session's folder that belong to the host, not to the VM:
/// ESXi's NFS lock files, swap and logs are made anew where the VM runs.
fn host_only(file: &str) -> bool {
    file.starts_with(".lck-")
        || file.ends_with(".vswp")
        || file.ends_with(".log")
        || file.ends_with("~")
        || file.ends_with(".vmsd")
}

/// Moves session `name`'s VM onto `datastore` of its host, then ends the
/// session. Through a vCenter, by Storage vMotion (RelocateVM_Task): the
/// VM keeps running. On a standalone host, which cannot relocate a running
/// VM: power off, copy its files as the host sees them (the point plus the
/// overlay's writes, read through coffer's own NFS export), register the
/// copy, power it on ("I moved it": same identity). The VM is down from
/// the power-off to the power-on; on a failure before the copy is
/// registered, the instant VM is powered on again and the session kept.
pub fn migrate(config: &Config, name: &str, datastore: &str) -> Result<Migrated> {
    let state_dir = &config.settings.state_dir;
    let dir = session::session_dir(state_dir, name);
    if !dir.join("session.json").exists() {
        bail!("no instant-recovery session named `{name}` (coffer instant-recover list)");
    }
    let mut s = session::load(&dir)?;
    let conn = connect::connect(source_of(config, &s.source)?, state_dir)?;
    let target = HostTarget::of_source(&conn, datastore, &s.place)?;
    let vm = s
        .vm_moref()
        .ok_or_else(|| anyhow!("session `{name}` has no VM on the host; stop it"))?;
    if conn.session.service_content().about.is_vcenter() {
        // Through a vCenter: a Storage vMotion moves the running VM's
        // files off the export, without downtime.
        let ds = conn
            .session
            .datastore_named(&target.host, datastore)?
            .ok_or_else(|| anyhow!("host {} has no datastore `{datastore}`", target.host.value))?;
        conn.session
            .run_task(&soap::relocate_vm(&vm, &ds), TASK)
            .with_context(|| format!("moving {name} to datastore {datastore} (Storage vMotion)"))?;
        // The VM no longer lives on the session's datastore: it stays.
        s.vm_ref = None;
        session::save(&dir, &s)?;
        tear_down(&conn, &dir, &mut s)?;
        return Ok(Migrated {
            session: s,
            datastore: datastore.to_string(),
            bytes_copied: 0,
            downtime_seconds: 0.0,
            storage_vmotion: true,
        });
    }
    let down = Instant::now();
    match conn.session.run_task(&soap::power_off_vm(&vm), TASK) {
        Ok(_) => {}
        Err(e) if e.to_string().contains("poweredOff") => {}
        Err(e) => return Err(e).context(format!("powering {name} off")),
    }
    let scratch = tempfile::tempdir_in(state_dir)
        .or_else(|_| tempfile::tempdir())
        .context("a scratch directory for the VM's files")?;
    let copied = copy_out(&s, scratch.path()).and_then(|(files, bytes)| {
        restore::upload_vm_folder(&target, &s.name, &files, None)?;
        Ok(bytes)
    });
    let bytes_copied = match copied {
        Ok(b) => b,
        Err(e) => {
            let _ = conn.session.power_on_answering(&vm, true, TASK);
            return Err(e.context(format!(
                "copying {name} to datastore {datastore}; the instant VM runs again and the session stays"
            )));
        }
    };
    // The instant VM goes, then the copy comes: two VMs of one name and
    // identity never run side by side.
    conn.session
        .call_empty(&soap::unregister_vm(&vm))
        .with_context(|| format!("unregistering the instant VM {name}"))?;
    s.vm_ref = None;
    session::save(&dir, &s)?;
    restore::register_on_host(&target, &s.name, Some(true))
        .with_context(|| format!("registering {name} from datastore {datastore}"))?;
    let downtime_seconds = down.elapsed().as_secs_f64();
    tear_down(&conn, &dir, &mut s)?;
    Ok(Migrated {
        session: s,
        datastore: datastore.to_string(),
        bytes_copied,
        downtime_seconds,
        storage_vmotion: false,
    })
}

/// Copies the session's VM folder, as coffer's NFS server serves it now,
/// into `into` (sparsely: zero blocks stay holes); answers the files and
/// the bytes read.
fn copy_out(s: &Session, into: &Path) -> Result<(Vec<PathBuf>, u64)> {
    let mut nas = crate::instant::client::Nas::mount(&s.address, &s.export)
        .with_context(|| format!("mounting {}:{}", s.address, s.export))?;
    let mut files = Vec::new();
    let mut bytes = 0;
    for file in nas.list(&s.name)? {
        if host_only(&file) {
            continue;
        }
        let out = into.join(&file);
        let size = nas
            .copy_sparse(&format!("{}/{file}", s.name), &out)
            .with_context(|| format!("copying {file} into {}", out.display()))?;
        bytes += size;
        files.push(out);
    }
    Ok((files, bytes))
}

/// The NFS server of the session in `dir`, run by `coffer instant-recover
/// serve`: serves until the process is stopped.
pub fn serve_session(config: &Config, dir: &Path) -> Result<()> {
    let s = session::load(dir)?;
    let repo = super::tiers::open_tier(config, &s.tier)?;
    let p = repo.find_point(&s.point)?;
    let m = repo.read_manifest(&p)?;
    let changes = VmxChanges {
        name: s.name.clone(),
        new_uuid: s.new_uuid,
        disconnect_network: s.disconnect_network,
        network: s.network.clone(),
    };
    let export = PointExport::new(repo, &m, &changes, &session::overlay_dir(dir))?;
    let address: IpAddr = s
        .address
        .parse()
        .map_err(|_| anyhow!("bad address {}", s.address))?;
    let _server = serve::serve(
        export,
        s.export.trim_start_matches('/'),
        address,
        &[serve::PORTMAP_PORT, serve::NFS_PORT],
    )?;
    std::fs::write(session::ready_file(dir), b"listening\n")?;
    eprintln!(
        "serving point {} of {} as {}:{} (ports 111 and 2049)",
        s.point, s.vm, s.address, s.export
    );
    loop {
        std::thread::park();
    }
}
