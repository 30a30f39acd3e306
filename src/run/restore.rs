//! Restoring a VM from a point: every disk as a VMDK (descriptor + flat,
//! sparse) and its .vmx, into a local directory; or onto a host: the same
//! files uploaded to a datastore folder, the VM registered under a new name
//! and optionally powered on. Nothing existing is overwritten unless asked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::repo::Repository;
use crate::repo::ids::FileStem;
use crate::repo::manifest::Manifest;
use crate::repo::restore::{self, DiskFormat};
use crate::vsphere::Session;
use crate::vsphere::datastore::{self, DatastorePath};
use crate::vsphere::soap;
use crate::vsphere::types::MoRef;

/// How the restored VM differs from the original.
#[derive(Debug, Clone, Default)]
pub struct VmxChanges {
    /// The restored VM's name (files and displayName).
    pub name: String,
    /// Drop the BIOS and location UUIDs so the host gives new ones.
    pub new_uuid: bool,
    /// Network cards start disconnected (an isolated restore or drill).
    pub disconnect_network: bool,
}

/// The file stem of disk `i` of a VM named `name`, as ESXi names them.
pub fn disk_stem(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// Rewrites a .vmx for the restored VM: its name, its disks' file names (in
/// the order the .vmx lists them, which is device-key order), and the
/// changes asked for.
pub fn rewrite_vmx(vmx: &str, c: &VmxChanges) -> String {
    rewrite_vmx_leaving_out(vmx, c, &[])
}

/// The position of disk `device_key` among all the VM's disks at backup
/// time, the ones the point left out included (device-key order, as the
/// .vmx lists them): its restored file is `disk_stem(name, position)`.
pub fn disk_position(m: &Manifest, device_key: i32) -> usize {
    let mut keys: Vec<i32> = m
        .disks
        .iter()
        .map(|d| d.device_key)
        .chain(m.skipped_disks.iter().map(|d| d.device_key))
        .collect();
    keys.sort_unstable();
    keys.iter().position(|k| *k == device_key).unwrap_or(0)
}

/// The positions (see `disk_position`) of the disks point `m` left out.
pub fn left_out_positions(m: &Manifest) -> Vec<usize> {
    m.skipped_disks
        .iter()
        .map(|d| disk_position(m, d.device_key))
        .collect()
}

/// `rewrite_vmx`, with the disks at `left_out` (positions among the .vmx's
/// disks) removed from the VM: every line of their device goes, since the
/// restore has no file for them and a .vmx naming a missing disk does not
/// register or power on. The other disks keep their positions in their
/// file names, so each file is the disk the .vmx slot held.
pub fn rewrite_vmx_leaving_out(vmx: &str, c: &VmxChanges, left_out: &[usize]) -> String {
    let is_disk = |key: &str, value: &str| {
        key.to_ascii_lowercase().ends_with(".filename") && value.ends_with(".vmdk")
    };
    let entry = |line: &str| {
        line.split_once('=')
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
    };
    // The device (`scsi0:1`) of each left-out disk.
    let dropped: Vec<String> = vmx
        .lines()
        .filter_map(entry)
        .filter(|(k, v)| is_disk(k, v))
        .enumerate()
        .filter(|(i, _)| left_out.contains(i))
        .filter_map(|(_, (k, _))| k.rsplit_once('.').map(|(dev, _)| format!("{dev}.")))
        .collect();
    let mut disk = 0;
    let mut out = String::new();
    for line in vmx.lines() {
        if let Some((key, _)) = entry(line)
            && dropped.iter().any(|d| key.starts_with(d.as_str()))
        {
            if key.to_ascii_lowercase().ends_with(".filename") {
                disk += 1;
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim().trim_matches('"')),
            None => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        let lower = key.to_ascii_lowercase();
        if lower == "displayname" {
            out.push_str(&format!("displayName = \"{}\"\n", c.name));
        } else if lower.ends_with(".filename") && value.ends_with(".vmdk") {
            out.push_str(&format!("{key} = \"{}.vmdk\"\n", disk_stem(&c.name, disk)));
            disk += 1;
        } else if lower == "nvram" {
            out.push_str(&format!("nvram = \"{}.nvram\"\n", c.name));
        } else if (c.new_uuid
            && (lower == "uuid.bios" || lower == "uuid.location" || lower == "vc.uuid"))
            || (c.disconnect_network
                && lower.starts_with("ethernet")
                && lower.ends_with(".startconnected"))
        {
            // Dropped: the host makes new UUIDs; connection is set below.
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if c.disconnect_network {
        let cards: std::collections::BTreeSet<String> = vmx
            .lines()
            .filter_map(|l| l.split_once('.').map(|(k, _)| k.trim().to_string()))
            .filter(|k| k.to_ascii_lowercase().starts_with("ethernet"))
            .collect();
        for card in cards {
            out.push_str(&format!("{card}.startConnected = \"FALSE\"\n"));
        }
    }
    out
}

/// The restored VM's name as a file name: it names files in a local
/// directory and a folder on a datastore, so it may not hold a separator,
/// `..` or a control character.
fn restored_name(changes: &VmxChanges) -> Result<FileStem> {
    FileStem::parse(&changes.name)
        .map_err(|e| anyhow!("the restored VM's name cannot be used: {e}; choose another --name"))
}

/// What a local restore wrote.
#[derive(Debug)]
pub struct LocalRestore {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Restores every disk (or the ones in `only`) of `m` as VMDKs named after
/// `changes.name` into `dir`, and the .vmx when the point has one.
pub fn restore_local(
    repo: &Repository,
    m: &Manifest,
    dir: &Path,
    changes: &VmxChanges,
    only: Option<&[i32]>,
    force: bool,
    threads: usize,
) -> Result<LocalRestore> {
    let started = Instant::now();
    let stem = restored_name(changes)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bytes = 0;
    // Everything is restored and proven under temporary names first, then
    // renamed into place: a failure on any disk leaves the directory as it
    // was, also with `force`.
    let mut prepared = Vec::new();
    for disk in &m.disks {
        if only.is_some_and(|o| !o.contains(&disk.device_key)) {
            continue;
        }
        let out = dir.join(format!(
            "{}.vmdk",
            disk_stem(stem.as_str(), disk_position(m, disk.device_key))
        ));
        let index = repo.read_index(m, disk)?;
        prepared.push(
            restore::prepare_disk(repo, &index, &out, DiskFormat::Vmdk, force, threads)
                .with_context(|| format!("restoring {} of point {}", disk.label, m.point_id))?,
        );
        bytes += disk.size_bytes;
    }
    let mut vmx_out = None;
    if let Some((name, _)) = m.files.iter().find(|(n, _)| n.ends_with(".vmx")) {
        let vmx = repo.read_file(m, name)?;
        let out = dir.join(format!("{stem}.vmx"));
        if out.exists() && !force {
            bail!("{} exists; give --force to replace it", out.display());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{stem}.vmx.coffer-restore-"))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        std::io::Write::write_all(
            &mut tmp,
            rewrite_vmx_leaving_out(
                &String::from_utf8_lossy(&vmx),
                changes,
                &left_out_positions(m),
            )
            .as_bytes(),
        )?;
        tmp.as_file().sync_all()?;
        vmx_out = Some((tmp, out));
    }
    let mut files = Vec::new();
    for p in prepared {
        files.extend(p.publish()?.files);
    }
    // The .vmx last: a directory with a .vmx holds its disks.
    if let Some((tmp, out)) = vmx_out {
        tmp.persist(&out)
            .map_err(|e| anyhow!("renaming into {}: {}", out.display(), e.error))?;
        files.push(out);
    }
    Ok(LocalRestore {
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where on a host a VM is restored.
#[derive(Debug, Clone)]
pub struct HostTarget<'a> {
    pub session: &'a Session,
    pub datacenter: &'a str,
    pub datastore: &'a str,
    /// Folder to register in (`ha-folder-vm` on a standalone ESXi host).
    pub folder: MoRef,
    /// Resource pool (`ha-root-pool` on a standalone ESXi host).
    pub pool: Option<MoRef>,
}

impl<'a> HostTarget<'a> {
    /// A standalone ESXi host (or the lab): its fixed VM folder and root
    /// resource pool.
    pub fn esxi(conn: &'a crate::run::connect::Connected, datastore: &'a str) -> HostTarget<'a> {
        HostTarget {
            session: &conn.session,
            datacenter: &conn.datacenter,
            datastore,
            folder: MoRef::new("Folder", "ha-folder-vm"),
            pool: Some(MoRef::new("ResourcePool", "ha-root-pool")),
        }
    }
}

/// A VM restored onto a host.
#[derive(Debug)]
pub struct HostRestore {
    pub vm: MoRef,
    pub bytes_uploaded: u64,
    pub seconds: f64,
}

/// Restores `m` as a new VM on a host: local files in `scratch`, uploaded to
/// `[datastore] <name>/`, registered, powered on when asked. Refuses a name
/// a VM already has and a folder that already holds the files.
pub fn restore_to_host(
    repo: &Repository,
    m: &Manifest,
    target: &HostTarget<'_>,
    changes: &VmxChanges,
    power_on: bool,
    scratch: &Path,
    threads: usize,
) -> Result<HostRestore> {
    let started = Instant::now();
    restored_name(changes)?;
    // A vCenter source names no datacenter unless told: VMs have their
    // own, a new VM has none.
    if target.datacenter.is_empty() {
        bail!(
            "the host's source names no datacenter to restore into; set `datacenter = \"…\"` on it"
        );
    }
    let session = target.session;
    if session.list_vms()?.iter().any(|v| v.name == changes.name) {
        bail!(
            "a VM named `{}` already exists on the host; choose another --name",
            changes.name
        );
    }
    if !m.files.iter().any(|(n, _)| n.ends_with(".vmx")) {
        bail!(
            "point {} holds no .vmx; restore its disks to files and create the VM by hand",
            m.point_id
        );
    }
    let local = restore_local(repo, m, scratch, changes, None, true, threads)?;
    let mut uploaded = 0;
    // Flat extents first, descriptors next, the .vmx last: a half-done
    // upload never looks like a registrable VM.
    let mut order = local.files.clone();
    order.sort_by_key(|f| {
        let n = f.to_string_lossy();
        if n.ends_with("-flat.vmdk") {
            0
        } else if n.ends_with(".vmdk") {
            1
        } else {
            2
        }
    });
    for f in &order {
        let file_name = f
            .file_name()
            .ok_or_else(|| anyhow!("no file name: {}", f.display()))?
            .to_string_lossy();
        let dest = DatastorePath {
            datastore: target.datastore.to_string(),
            path: format!("{}/{file_name}", changes.name),
        };
        uploaded += datastore::upload(session.transport(), target.datacenter, &dest, f, false)?;
    }
    let vmx = format!(
        "[{}] {}/{}.vmx",
        target.datastore, changes.name, changes.name
    );
    let info = session.run_task(
        &soap::register_vm(
            &target.folder,
            &vmx,
            Some(&changes.name),
            target.pool.as_ref(),
            None,
        ),
        Duration::from_secs(600),
    )?;
    let vm = info
        .result
        .ok_or_else(|| anyhow!("RegisterVM answered no VM"))?;
    if power_on {
        session.run_task(&soap::power_on_vm(&vm), Duration::from_secs(600))?;
    }
    Ok(HostRestore {
        vm,
        bytes_uploaded: uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmx_gets_the_new_name_disks_and_isolation() {
        let vmx = "displayName = \"db01\"\nuuid.bios = \"42 1a\"\nscsi0:0.fileName = \"db01.vmdk\"\nscsi0:1.fileName = \"db01_1.vmdk\"\nethernet0.present = \"TRUE\"\nethernet0.startConnected = \"TRUE\"\nnvram = \"db01.nvram\"\n";
        let out = rewrite_vmx(
            vmx,
            &VmxChanges {
                name: "db01-drill".into(),
                new_uuid: true,
                disconnect_network: true,
            },
        );
        assert_eq!(
            out,
            "displayName = \"db01-drill\"\nscsi0:0.fileName = \"db01-drill.vmdk\"\nscsi0:1.fileName = \"db01-drill_1.vmdk\"\nethernet0.present = \"TRUE\"\nnvram = \"db01-drill.nvram\"\nethernet0.startConnected = \"FALSE\"\n"
        );
    }
}
