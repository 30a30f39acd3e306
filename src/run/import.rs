//! Restoring a point onto a host or a vCenter through the host's own OVF
//! import (`vsphere::nfc`), the path vSphere offers for creating a VM from
//! disks: the host creates the VM and thin disks, and takes each disk as a
//! streamOptimized VMDK, in which zeros are never sent.
//!
//! 1. Each disk of the point is written as a streamOptimized VMDK into the
//!    scratch directory (its size must be known before it is sent), and
//!    the OVF descriptor is made from the point's .vmx as the restore
//!    changes it (name, identity, network; `ovf`).
//! 2. `CreateImportSpec` turns it into the host's import spec; anything the
//!    host says it cannot import stops the restore before it changes
//!    anything.
//! 3. `ImportVApp` creates the VM and a lease; each disk is uploaded to the
//!    lease's URL for it, with no deadline for the whole upload, only an
//!    idle timeout, while a keeper thread reports progress more often than
//!    the lease's timeout.
//! 4. On success `HttpNfcLeaseComplete`, then the NVRAM beside the .vmx and
//!    the power-on. On every failure and on Ctrl-C the lease is aborted,
//!    and the host removes what the import created.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::export::stream_disk;
use super::ovf::{OvfDisk, VmHardware, ovf_envelope, scsi_slot};
use super::restore::{HostRestore, HostTarget, ToHost, disk_position, rewrite_vmx_for};
use crate::progress::ReadProgress;
use crate::vsphere::datastore::DatastorePath;
use crate::vsphere::nfc::{self, LeaseInfo};
use crate::vsphere::transport::{UPLOAD_IDLE, Upload};
use crate::vsphere::types::MoRef;

/// How long a lease may stay `initializing` (the host creating the VM and
/// its disks).
const LEASE_READY_WAIT: Duration = Duration::from_secs(600);

/// The Content-Type of a streamOptimized disk sent to a lease (govmomi's
/// `nfc.Lease.Upload` sends disks with it, by POST).
const STREAM_VMDK_TYPE: &str = "application/x-vnd.vmware-streamVmdk";

/// How often the keeper reports progress: four times per lease timeout,
/// and at least once a minute.
fn keeper_interval(timeout_seconds: u64) -> Duration {
    Duration::from_millis((timeout_seconds * 1000 / 4).clamp(250, 60_000))
}

/// One staged disk: its file in the scratch directory and what the OVF
/// says of it.
struct Staged {
    file: tempfile::NamedTempFile,
    ovf: OvfDisk,
}

/// Aborts the lease unless the import completed: whatever path leaves the
/// restore (an error, a panic, Ctrl-C) gives the lease up.
struct LeaseGuard<'a> {
    target: &'a HostTarget<'a>,
    lease: MoRef,
    why: String,
    completed: bool,
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if !self.completed {
            let reason = format!("coffer gave the restore up: {}", self.why);
            let _ = self.target.session.lease_abort(&self.lease, &reason);
        }
    }
}

/// Restores `job.m` as a new VM on its target through the host's OVF
/// import. `stop` (Ctrl-C) gives the restore up at the next piece of data.
pub fn restore_by_import(job: &ToHost<'_>) -> Result<HostRestore> {
    let ToHost {
        repo,
        m,
        target,
        changes,
        power_on,
        scratch,
        threads,
        progress,
        stop,
    } = *job;
    let started = Instant::now();
    let session = target.session;
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let pool = target
        .pool
        .as_ref()
        .ok_or_else(|| anyhow!("an import needs a resource pool"))?;
    let datastore = session
        .datastore_named(&target.host, target.datastore)?
        .ok_or_else(|| {
            anyhow!(
                "the host has no datastore named `{}`; choose another with --datastore",
                target.datastore
            )
        })?;
    let vmx_name = m
        .files
        .iter()
        .find(|(n, _)| n.ends_with(".vmx"))
        .map(|(n, _)| n.clone())
        .ok_or_else(|| anyhow!("point {} holds no .vmx", m.point_id))?;
    let vmx = String::from_utf8_lossy(&repo.read_file(m, &vmx_name)?).into_owned();
    // The hardware as the restore changes it: new identity, network.
    let hw = VmHardware::from_vmx(&rewrite_vmx_for(&vmx, changes, m));

    // 1. Every disk as a streamOptimized VMDK, in the order of the VM's
    // disks.
    let mut order: Vec<usize> = (0..m.disks.len()).collect();
    order.sort_by_key(|&i| disk_position(m, m.disks[i].device_key));
    let mut staged = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let entry = &m.disks[i];
        let name = format!("{}-disk{}.vmdk", changes.name, n + 1);
        let (file, size, _) = stream_disk(repo, m, i, scratch, &name, threads, stop)
            .with_context(|| format!("preparing {} for the upload", entry.label))?;
        staged.push(Staged {
            file,
            ovf: OvfDisk {
                file_name: name,
                file_size_bytes: size,
                capacity_bytes: entry.size_bytes,
                slot: scsi_slot(entry.slot.as_deref()),
            },
        });
    }
    if stopped() {
        bail!("stopped before the import began; nothing was created on the host");
    }
    let disks: Vec<OvfDisk> = staged.iter().map(|s| s.ovf.clone()).collect();
    let descriptor = ovf_envelope(&changes.name, &hw, &disks)?;

    // 2. The host's import spec.
    let spec = session
        .create_import_spec(&descriptor, pool, &datastore, &changes.name)
        .context("CreateImportSpec")?;
    if !spec.errors.is_empty() {
        bail!(
            "the host cannot import point {}: {}",
            m.point_id,
            spec.errors.join("; ")
        );
    }
    for item in &spec.files {
        if !staged.iter().any(|s| s.ovf.file_name == item.path) {
            bail!(
                "the host asks for a file coffer did not offer: {}",
                item.path
            );
        }
    }
    if let Some(s) = staged
        .iter()
        .find(|s| !spec.files.iter().any(|f| f.path == s.ovf.file_name))
    {
        bail!(
            "the host's import spec leaves out {}; refusing a VM without it",
            s.ovf.file_name
        );
    }

    // 3. The VM and its lease; from here on the lease is aborted unless
    // the import completes.
    let lease = session
        .import_vapp(pool, &spec, Some(&target.folder), Some(&target.host))
        .context("ImportVApp")?;
    let mut guard = LeaseGuard {
        target,
        lease: lease.clone(),
        why: "the restore failed".into(),
        completed: false,
    };
    let info = session
        .wait_lease_ready(&lease, LEASE_READY_WAIT)
        .context("waiting for the import lease")?;
    let total: u64 = staged.iter().map(|s| s.ovf.file_size_bytes).sum();
    if let Some(p) = progress {
        p.plan(total);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let uploaded = upload_with_keeper(
        target,
        &lease,
        &info,
        &spec.files,
        &staged,
        &sent,
        total,
        progress,
        stop,
    );
    if let Err(e) = uploaded {
        guard.why = if stopped() {
            "interrupted".into()
        } else {
            format!("{e:#}")
        };
        return Err(e);
    }
    session
        .lease_complete(&lease)
        .context("HttpNfcLeaseComplete")?;
    guard.completed = true;
    let vm = info.entity.clone();

    // 4. NVRAM and power-on; a failure here leaves a VM that cannot be
    // trusted, so it is removed.
    let finish = || -> Result<()> {
        if let Some((name, _)) = m.files.iter().find(|(n, _)| n.ends_with(".nvram")) {
            let scratch_nvram = scratch.join(format!("{}.nvram", changes.name));
            std::fs::write(&scratch_nvram, repo.read_file(m, name)?)?;
            let dest = DatastorePath {
                datastore: target.datastore.to_string(),
                path: format!("{0}/{0}.nvram", changes.name),
            };
            crate::vsphere::datastore::upload(
                session.transport(),
                &target.datacenter,
                &dest,
                &scratch_nvram,
                true,
            )
            .context("uploading the NVRAM")?;
        }
        if power_on {
            session.power_on_answering(&vm, !changes.new_uuid, Duration::from_secs(600))?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = session.run_task(
            &crate::vsphere::soap::destroy(&vm),
            Duration::from_secs(600),
        );
        return Err(e);
    }
    Ok(HostRestore {
        vm,
        bytes_uploaded: sent.load(Ordering::Relaxed),
        disk_bytes: m.disks.iter().map(|d| d.size_bytes).sum(),
        imported: true,
        seconds: started.elapsed().as_secs_f64(),
        heartbeat_seconds: None,
        heartbeat_note: None,
    })
}

/// Uploads every staged disk to its device URL while a keeper thread
/// reports progress to the lease; fails when an upload fails or the
/// keeper finds the lease gone (timed out, aborted by someone else).
#[allow(clippy::too_many_arguments)]
fn upload_with_keeper(
    target: &HostTarget<'_>,
    lease: &MoRef,
    info: &LeaseInfo,
    files: &[nfc::FileItem],
    staged: &[Staged],
    sent: &Arc<AtomicU64>,
    total: u64,
    progress: Option<&Arc<ReadProgress>>,
    stop: Option<&'static AtomicBool>,
) -> Result<()> {
    let session = target.session;
    let (quit, quit_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let keeper = scope.spawn(move || -> Result<()> {
            let every = keeper_interval(info.timeout_seconds);
            loop {
                match quit_rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return Ok(()),
                }
                let percent = (sent.load(Ordering::Relaxed) * 100)
                    .checked_div(total)
                    .unwrap_or(0)
                    .min(99) as u8;
                session
                    .lease_progress(lease, percent)
                    .context("the import lease refused a progress report")?;
            }
        });
        let uploads = (|| -> Result<()> {
            for item in files {
                let s = staged
                    .iter()
                    .find(|s| s.ovf.file_name == item.path)
                    .expect("checked against the spec");
                let device = info
                    .device_urls
                    .iter()
                    .find(|d| d.import_key == item.device_id)
                    .ok_or_else(|| {
                        anyhow!(
                            "the lease has no upload URL for {} ({})",
                            item.path,
                            item.device_id
                        )
                    })?;
                let url = nfc::upload_url(&device.url, session.transport().host());
                let file = std::fs::File::open(s.file.path())?;
                let resp = session
                    .transport()
                    .upload(Upload {
                        method: reqwest::Method::POST,
                        url: url.clone(),
                        content_type: STREAM_VMDK_TYPE,
                        file,
                        len: s.ovf.file_size_bytes,
                        idle: UPLOAD_IDLE,
                        progress: progress.cloned(),
                        sent: Some(sent.clone()),
                        stop,
                        host_sha1: device
                            .ssl_thumbprint
                            .as_deref()
                            .and_then(crate::vsphere::transport::parse_sha1_thumbprint),
                    })
                    .with_context(|| format!("uploading {}", item.path))?;
                if !(200..300).contains(&resp.status) {
                    bail!(
                        "the host refused {} with HTTP {}: {}",
                        item.path,
                        resp.status,
                        String::from_utf8_lossy(&resp.body).trim()
                    );
                }
            }
            Ok(())
        })();
        let _ = quit.send(());
        let kept = keeper
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the lease keeper panicked")));
        uploads.and(kept)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_well_within_the_lease_timeout() {
        assert_eq!(keeper_interval(300), Duration::from_secs(60));
        assert_eq!(keeper_interval(120), Duration::from_secs(30));
        assert_eq!(keeper_interval(2), Duration::from_millis(500));
        assert_eq!(keeper_interval(0), Duration::from_millis(250));
    }
}
