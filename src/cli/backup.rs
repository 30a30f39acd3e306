//! `coffer backup VM`: one backup of one VM now, by its policy (or the one
//! named), into the policy's backup tier: incremental from the newest point
//! of that VM on the tier when CBT can be trusted, else a full, with the
//! reason. Ctrl-C stops the read, removes the snapshot and records nothing.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::plan::cbt::CbtVerdict;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::connect::{self, Connected};
use crate::run::vm_backup::{self, VmBackupError, VmBackupRequest};

/// Exit code of a backup stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Set by a second Ctrl-C: stop as soon as no snapshot is open.
pub static ABORT: AtomicBool = AtomicBool::new(false);

/// Backups with an open snapshot right now (a second Ctrl-C waits for
/// them to remove it, and only for them).
pub static SNAPSHOTS_OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_sigint(_: libc::c_int) {
    if CANCEL.swap(true, Ordering::SeqCst) {
        ABORT.store(true, Ordering::SeqCst);
    }
}

/// Ctrl-C and SIGTERM set the cancel flag instead of killing the process,
/// so the snapshot is removed before coffer exits.
pub fn install_cancel_handler() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    &CANCEL
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name.
    pub vm: String,
    /// The source to find it on (default: every ESXi and vCenter source).
    #[arg(long)]
    pub source: Option<String>,
    /// The policy to follow (default: the one whose selector takes the VM).
    #[arg(long)]
    pub policy: Option<String>,
    /// Write to this tier instead of the policy's `backup_to`.
    #[arg(long)]
    pub tier: Option<String>,
    /// Take a full backup even when an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

/// A new run id: sortable, unique enough to name a snapshot.
pub fn new_run_id() -> String {
    let mut r = [0u8; 2];
    getrandom::fill(&mut r).expect("the OS random source works");
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        hex::encode(r)
    )
}

/// The newest point of the VM with `uuid` in `repo`.
/// The newest point of the VM `uuid` of `source` on `repo`: a point
/// recorded from another source (a VM there with the same instance UUID)
/// is another VM's and never a base. A point from before coffer recorded
/// sources counts as this VM's.
pub fn newest_point(repo: &Repository, uuid: &str, source: &str) -> Result<Option<Manifest>> {
    let mut listed: Vec<_> = repo
        .list_points()?
        .into_iter()
        .filter(|p| p.vm_uuid == uuid)
        .collect();
    listed.sort_by(|a, b| b.point_id.cmp(&a.point_id));
    for p in listed {
        let m = repo.read_manifest(&p)?;
        if m.vm.source.as_deref().is_none_or(|s| s == source) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

pub fn run(args: Args) -> Result<u8> {
    let cancel = install_cancel_handler();
    let config = load_or_report(&args.policies).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let mut found: Option<(Connected, crate::vsphere::VmRecord)> = None;
    for source in config.sources.values() {
        if args.source.as_ref().is_some_and(|s| s != &source.name) {
            continue;
        }
        let conn = connect::connect(source, &config.settings.state_dir)?;
        if let Some(vm) = conn
            .session
            .list_vms()?
            .into_iter()
            .find(|v| v.name == args.vm)
        {
            found = Some((conn, vm));
            break;
        }
    }
    let Some((conn, vm)) = found else {
        bail!(
            "no VM named `{}` on the sources of {}",
            args.vm,
            config.dir.display()
        );
    };
    let policy = match &args.policy {
        Some(name) => config
            .policies
            .get(name)
            .ok_or_else(|| anyhow!("no policy named `{name}`"))?,
        None => {
            let names: Vec<&str> = crate::plan::planner::policies_of(&config, &conn.source, &vm)
                .into_iter()
                .map(|p| p.name.as_str())
                .collect();
            match names.as_slice() {
                [one] => &config.policies[*one],
                [] => bail!(
                    "no policy selects VM `{}` of source `{}`; name one with --policy",
                    vm.name,
                    conn.source
                ),
                many => bail!(
                    "policies {} all select VM `{}`; name one with --policy",
                    many.join(", "),
                    vm.name
                ),
            }
        }
    };
    let tier = args
        .tier
        .clone()
        .unwrap_or_else(|| policy.backup_to.clone());
    let repo = super::repo::Target {
        tier: Some(tier.clone()),
        repo: None,
        endpoint: None,
        region: None,
        key_env: None,
        key_file: None,
        policy: args.policies.clone(),
    }
    .open()?;
    let uuid = vm
        .instance_uuid
        .clone()
        .ok_or_else(|| anyhow!("VM `{}` has no instance UUID", vm.name))?;
    let base = if args.full {
        None
    } else {
        newest_point(&repo, &uuid, &conn.source)?
    };
    let run_id = new_run_id();
    let _lock = crate::run::runlock::RunnerLock::take(
        &config.settings.state_dir,
        &format!("coffer backup {}, run {run_id}", vm.name),
    )?;
    let chunk = u32::try_from(policy.chunk_size.0).context("chunk size")?;
    let io_limit = crate::run::throttle::policy_throttle(policy);
    let installation = crate::run::installation::id(&config.settings.state_dir)?;
    let request = VmBackupRequest {
        vm: &vm,
        installation: &installation,
        snapshot_max_age: config.compliance.snapshot_max_age,
        source: &conn.source,
        datacenter: &conn.datacenter,
        run_id: &run_id,
        consistency: policy.consistency,
        base: base.as_ref(),
        chunk_size_bytes: chunk,
        threads: super::threads(),
        task_timeout: Duration::from_secs(30 * 60),
        cancel,
        io_limit: io_limit.as_deref(),
        progress: None,
    };
    let outcome = match vm_backup::backup_vm(&conn.session, &repo, &request) {
        Ok(o) => o,
        Err(VmBackupError::Cancelled { vm }) => {
            eprintln!(
                "coffer: backup of {vm} cancelled; its snapshot was removed and no point was recorded"
            );
            return Ok(EXIT_CANCELLED);
        }
        Err(e) => return Err(e.into()),
    };
    let m = &outcome.manifest;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "run_id": run_id,
                "vm": vm.name,
                "point": m.point_id,
                "tier": tier,
                "kind": m.kind,
                "parent": m.parent,
                "consistency": outcome.consistency,
                "quiesce_fallback": outcome.quiesce_fallback,
                "snapshot": outcome.snapshot,
                "leftovers_removed": outcome.leftovers_removed.iter().map(|l| serde_json::json!({"snapshot": l.name, "why": l.why})).collect::<Vec<_>>(),
                "leftovers_kept": outcome.leftovers_kept.iter().map(|l| serde_json::json!({"snapshot": l.name, "why": l.why})).collect::<Vec<_>>(),
                "duration_ms": m.duration_ms,
                "disks": outcome.disks.iter().zip(&m.disks).map(|(d, e)| serde_json::json!({
                    "device_key": d.device_key,
                    "mode": match &d.verdict { CbtVerdict::Incremental { .. } => "incremental", CbtVerdict::Full { .. } => "full" },
                    "reason": match &d.verdict { CbtVerdict::Incremental { since } => format!("changed since {since}"), CbtVerdict::Full { reason } => reason.clone() },
                    "bytes_fetched": d.bytes_fetched,
                    "requests": d.requests,
                    "size_bytes": e.size_bytes,
                    "change_id": e.change_id,
                })).collect::<Vec<_>>(),
            })
        )?;
        return Ok(EXIT_OK);
    }
    for l in &outcome.leftovers_removed {
        writeln!(out, "removed snapshot {}: {}", l.name, l.why)?;
    }
    for l in &outcome.leftovers_kept {
        writeln!(out, "left snapshot {} alone: {}", l.name, l.why)?;
    }
    writeln!(
        out,
        "VM {}: {} point {} on tier `{tier}` ({}-consistent{}) in {:.1}s",
        vm.name,
        format!("{:?}", m.kind).to_lowercase(),
        m.point_id,
        outcome.consistency,
        outcome
            .quiesce_fallback
            .as_ref()
            .map(|w| format!("; quiescing failed: {w}"))
            .unwrap_or_default(),
        m.duration_ms as f64 / 1000.0
    )?;
    for (d, e) in outcome.disks.iter().zip(&m.disks) {
        let how = match &d.verdict {
            CbtVerdict::Incremental { since } => format!("incremental, changed since {since}"),
            CbtVerdict::Full { reason } => format!("full ({reason})"),
        };
        writeln!(
            out,
            "  {} ({}): {how}; read {} in {} requests",
            d.label,
            crate::policy::units::format_size(e.size_bytes),
            crate::policy::units::format_size(d.bytes_fetched),
            d.requests
        )?;
    }
    writeln!(out, "snapshot {} removed", outcome.snapshot)?;
    Ok(EXIT_OK)
}
