//! Restoring a VM from a point: every disk as a VMDK (descriptor + flat,
//! sparse) and its .vmx, into a local directory; or onto a host: the same
//! files uploaded to a datastore folder, the VM registered under a new name
//! and optionally powered on. Nothing existing is overwritten unless asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::progress::ReadProgress;
use crate::repo::Repository;
use crate::repo::ids::FileStem;
use crate::repo::manifest::Manifest;
use crate::repo::restore::{self, DiskFormat};
use crate::vsphere::Session;
use crate::vsphere::datastore::{self, DatastorePath};
pub use crate::vsphere::placement::PlaceNames;
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
    /// Every network card on this port group, connected at power-on (a
    /// boot drill's isolated network); wins over `disconnect_network`.
    pub network: Option<String>,
}

/// The file stem of disk `i` of a VM named `name`, as ESXi names them.
pub fn disk_stem(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// Where a disk of the .vmx comes from in a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotFill {
    /// The point's disk at this position (see `disk_position`): its file
    /// is `disk_stem(name, position)`.
    Restored(usize),
    /// The point does not hold this disk: its device leaves the .vmx.
    LeftOut,
}

/// The disks of a .vmx: each device (`scsi0:1`) with a `.fileName` that
/// names a VMDK, and that file name, in the .vmx's line order.
fn vmx_disk_lines(vmx: &str) -> Vec<(String, String)> {
    crate::vsphere::vmx::entries(vmx)
        .filter_map(|(k, v)| {
            let device = k
                .len()
                .checked_sub(".filename".len())
                .filter(|at| k[*at..].eq_ignore_ascii_case(".filename"))
                .map(|at| &k[..at])?;
            v.to_ascii_lowercase()
                .ends_with(".vmdk")
                .then(|| (device.to_string(), v.to_string()))
        })
        .collect()
}

/// A disk file's name without folder, `.vmdk` and a snapshot's `-000001`:
/// the .vmx read during a backup names the running delta (`db01-000001.vmdk`)
/// of the disk whose base the point recorded (`[ds] db01/db01.vmdk`).
fn disk_base_name(file: &str) -> String {
    let name = file.rsplit(['/', ' ', ']']).next().unwrap_or(file);
    let stem = name
        .len()
        .checked_sub(5)
        .filter(|at| name[*at..].eq_ignore_ascii_case(".vmdk"))
        .map_or(name, |at| &name[..at]);
    match stem.rsplit_once('-') {
        Some((base, n)) if n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    }
    .to_string()
}

/// What the restore puts in each disk device of `vmx` for point `m`. A
/// disk goes back to the controller and unit it had (`slot` in the
/// manifest); a point written before slots were recorded matches the
/// .vmx's file names to the disks' (a snapshot's `-000001` aside), and
/// when those do not match one to one, falls back to the order of the
/// .vmx's lines. A device the point does not hold leaves the .vmx.
fn slot_fills(vmx: &str, m: &Manifest) -> Vec<(String, SlotFill)> {
    let lines = vmx_disk_lines(vmx);
    // (slot, base name, fill) of every disk the VM had at backup time.
    let known: Vec<(Option<&str>, Option<String>, SlotFill)> = m
        .disks
        .iter()
        .map(|d| {
            (
                d.slot.as_deref(),
                d.backing.as_deref().map(disk_base_name),
                SlotFill::Restored(disk_position(m, d.device_key)),
            )
        })
        .chain(m.skipped_disks.iter().map(|d| {
            (
                d.slot.as_deref(),
                Some(disk_base_name(&d.file)),
                SlotFill::LeftOut,
            )
        }))
        .collect();
    if known.iter().any(|(slot, _, _)| slot.is_some()) {
        return lines
            .into_iter()
            .map(|(device, _)| {
                let fill = known
                    .iter()
                    .find(|(slot, _, _)| slot.is_some_and(|s| s.eq_ignore_ascii_case(&device)))
                    .map_or(SlotFill::LeftOut, |(_, _, f)| f.clone());
                (device, fill)
            })
            .collect();
    }
    let by_name: Vec<Option<SlotFill>> = lines
        .iter()
        .map(|(_, file)| {
            let base = disk_base_name(file);
            let mut matching = known.iter().filter(|(_, b, _)| b.as_deref() == Some(&base));
            match (matching.next(), matching.next()) {
                (Some((_, _, fill)), None) => Some(fill.clone()),
                _ => None,
            }
        })
        .collect();
    let one_to_one = by_name.iter().all(Option::is_some)
        && by_name.len() == known.len()
        && (0..by_name.len()).all(|i| !by_name[..i].contains(&by_name[i]));
    lines
        .into_iter()
        .enumerate()
        .map(|(i, (device, _))| {
            let fill = if one_to_one {
                by_name[i].clone().expect("checked")
            } else if left_out_positions(m).contains(&i) {
                // By line order: the i-th disk of the VM at backup time.
                SlotFill::LeftOut
            } else {
                SlotFill::Restored(i)
            };
            (device, fill)
        })
        .collect()
}

/// Rewrites the .vmx of a point that holds every disk of it in the
/// order the .vmx lists them (an image, a test): see `rewrite_vmx_for`.
pub fn rewrite_vmx(vmx: &str, c: &VmxChanges) -> String {
    let fills = vmx_disk_lines(vmx)
        .into_iter()
        .enumerate()
        .map(|(i, (device, _))| (device, SlotFill::Restored(i)))
        .collect::<Vec<_>>();
    rewrite_vmx_with(vmx, c, &fills)
}

/// Rewrites the .vmx of point `m` for the restored VM: its name, each disk
/// device's file (see `slot_fills`), the devices of disks the point left
/// out removed (the restore has no file for them, and a .vmx naming a
/// missing disk does not register or power on), and the changes asked for.
pub fn rewrite_vmx_for(vmx: &str, c: &VmxChanges, m: &Manifest) -> String {
    rewrite_vmx_with(vmx, c, &slot_fills(vmx, m))
}

/// The position of disk `device_key` among all the VM's disks at backup
/// time, the ones the point left out included (device-key order): its
/// restored file is `disk_stem(name, position)`.
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

/// Whether .vmx key `key` belongs to one of a VM's network cards
/// (`ethernet0.…`), and to which.
fn network_card(key: &str) -> Option<&str> {
    let (card, _) = key.split_once('.')?;
    card.to_ascii_lowercase()
        .starts_with("ethernet")
        .then_some(card)
}

fn rewrite_vmx_with(vmx: &str, c: &VmxChanges, fills: &[(String, SlotFill)]) -> String {
    let dropped: Vec<String> = fills
        .iter()
        .filter(|(_, f)| *f == SlotFill::LeftOut)
        .map(|(device, _)| format!("{}.", device.to_ascii_lowercase()))
        .collect();
    let mut out = String::new();
    let mut cards = std::collections::BTreeSet::new();
    for line in vmx.lines() {
        let Some((key, value)) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let lower = key.to_ascii_lowercase();
        if dropped.iter().any(|d| lower.starts_with(d.as_str())) {
            continue;
        }
        if let Some(card) = network_card(key) {
            cards.insert(card.to_string());
        }
        let fill = lower
            .strip_suffix(".filename")
            .filter(|_| value.to_ascii_lowercase().ends_with(".vmdk"))
            .and_then(|device| {
                fills
                    .iter()
                    .find(|(d, _)| d.eq_ignore_ascii_case(device))
                    .map(|(_, f)| f)
            });
        let card_key = network_card(key).map(|card| lower[card.len() + 1..].to_string());
        if lower == "displayname" {
            out.push_str(&format!("displayName = \"{}\"\n", c.name));
        } else if let Some(SlotFill::Restored(position)) = fill {
            out.push_str(&format!(
                "{key} = \"{}.vmdk\"\n",
                disk_stem(&c.name, *position)
            ));
        } else if lower == "nvram" {
            out.push_str(&format!("nvram = \"{}.nvram\"\n", c.name));
        } else if c.new_uuid
            && (lower == "uuid.bios" || lower == "uuid.location" || lower == "vc.uuid")
        {
            // Dropped: the host makes new UUIDs at the first power-on.
            continue;
        } else if c.new_uuid
            && matches!(
                card_key.as_deref(),
                Some("generatedaddress" | "generatedaddressoffset" | "address" | "addresstype")
            )
        {
            // Dropped: without them the host generates a new MAC address
            // at power-on (VMware ESX Server Administration Guide, "Using
            // MAC Addresses": remove `ethernet<n>.address`, `addressType`
            // and `generatedAddressOffset` and the VM gets a generated one).
            continue;
        } else if (c.disconnect_network || c.network.is_some())
            && card_key.as_deref() == Some("startconnected")
        {
            // Set below.
            continue;
        } else if c.network.is_some() && card_key.as_deref() == Some("networkname") {
            // Set below: on a standalone host a card's port group is its
            // `ethernet<n>.networkName`.
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(pg) = &c.network {
        for card in cards {
            out.push_str(&format!(
                "{card}.networkName = \"{pg}\"\n{card}.startConnected = \"TRUE\"\n"
            ));
        }
    } else if c.disconnect_network {
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
/// `changes.name` into `dir`, and the .vmx when the point has one, counting
/// the disks' bytes done into `progress`.
#[allow(clippy::too_many_arguments)]
pub fn restore_local(
    repo: &Repository,
    m: &Manifest,
    dir: &Path,
    changes: &VmxChanges,
    only: Option<&[i32]>,
    force: bool,
    threads: usize,
    progress: Option<&ReadProgress>,
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
        if let Some(p) = progress {
            p.plan(index.disk_size_bytes);
        }
        prepared.push(
            restore::prepare_disk(
                repo,
                &index,
                &out,
                DiskFormat::Vmdk,
                force,
                threads,
                progress,
            )
            .with_context(|| format!("restoring {} of point {}", disk.label, m.point_id))?,
        );
        bytes += disk.size_bytes;
    }
    // The .vmx (rewritten for the restored VM) and the NVRAM, when the
    // point kept them.
    let mut small = Vec::new();
    if let Some((name, _)) = m.files.iter().find(|(n, _)| n.ends_with(".vmx")) {
        let vmx = repo.read_file(m, name)?;
        let text = rewrite_vmx_for(&String::from_utf8_lossy(&vmx), changes, m);
        small.push((format!("{stem}.vmx"), text.into_bytes()));
    }
    if let Some((name, _)) = m.files.iter().find(|(n, _)| n.ends_with(".nvram")) {
        small.insert(0, (format!("{stem}.nvram"), repo.read_file(m, name)?));
    }
    let mut small_out = Vec::new();
    for (name, bytes) in small {
        let out = dir.join(&name);
        if out.exists() && !force {
            bail!("{} exists; give --force to replace it", out.display());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.coffer-restore-"))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.as_file().sync_all()?;
        small_out.push((tmp, out));
    }
    let mut files = Vec::new();
    for p in prepared {
        files.extend(p.publish()?.files);
    }
    // The .vmx last: a directory with a .vmx holds its disks.
    for (tmp, out) in small_out {
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
    pub datacenter: String,
    pub datastore: &'a str,
    /// Folder to register in (`ha-folder-vm` on a standalone ESXi host).
    pub folder: MoRef,
    /// Resource pool (`ha-root-pool` on a standalone ESXi host).
    pub pool: Option<MoRef>,
    /// The host that runs the VM (`ha-host` on a standalone ESXi host).
    pub host: MoRef,
}

impl<'a> HostTarget<'a> {
    /// The host to put a VM on, as `names` places it: a standalone ESXi
    /// host (see `esxi`; a pool may be named there, ESXi has no VM
    /// folders), or a host of a vCenter with its datacenter, VM folder and
    /// resource pool (see `Session::host_placement`).
    pub fn of_source(
        conn: &'a crate::run::connect::Connected,
        datastore: &'a str,
        names: &PlaceNames,
    ) -> Result<HostTarget<'a>> {
        if !conn.session.service_content().about.is_vcenter() {
            let named = [
                ("host", &names.host),
                ("datacenter", &names.datacenter),
                ("VM folder", &names.folder),
            ];
            if let Some((what, Some(n))) = named.into_iter().find(|(_, n)| n.is_some()) {
                bail!(
                    "{what} `{n}` was named, but source `{}` is a standalone ESXi host (one datacenter, one VM folder)",
                    conn.source
                );
            }
            let mut target = HostTarget::esxi(conn, datastore);
            if let Some(wanted) = &names.pool {
                let root = MoRef::new("ResourcePool", "ha-root-pool");
                let pool = conn
                    .session
                    .esxi_pool(&root, wanted)?
                    .map_err(|why| anyhow!("source `{}`: {why}", conn.source))?;
                target.pool = Some(pool);
            }
            return Ok(target);
        }
        let (place, pool, folder) = conn
            .session
            .host_placement(names)?
            .map_err(|why| anyhow!("source `{}`: {why}", conn.source))?;
        Ok(HostTarget {
            session: &conn.session,
            datacenter: place.datacenter_path,
            datastore,
            folder,
            pool: Some(pool),
            host: place.host,
        })
    }

    /// A standalone ESXi host (or the lab): its fixed VM folder and root
    /// resource pool.
    pub fn esxi(conn: &'a crate::run::connect::Connected, datastore: &'a str) -> HostTarget<'a> {
        HostTarget {
            session: &conn.session,
            datacenter: conn.datacenter.clone(),
            datastore,
            folder: MoRef::new("Folder", "ha-folder-vm"),
            pool: Some(MoRef::new("ResourcePool", "ha-root-pool")),
            host: MoRef::new("HostSystem", "ha-host"),
        }
    }
}

/// A VM restored onto a host.
#[derive(Debug)]
pub struct HostRestore {
    pub vm: MoRef,
    pub bytes_uploaded: u64,
    /// Capacity of the restored disks.
    pub disk_bytes: u64,
    /// Through the host's OVF import (else the datastore's `/folder`).
    pub imported: bool,
    pub seconds: f64,
    /// From the start to the guest's first heartbeat, when waited for.
    pub heartbeat_seconds: Option<f64>,
    /// Why no heartbeat was seen, when waited for in vain.
    pub heartbeat_note: Option<String>,
}

/// A restore of a point onto a host as a new VM.
pub struct ToHost<'a> {
    pub repo: &'a Repository,
    pub m: &'a Manifest,
    pub target: &'a HostTarget<'a>,
    pub changes: &'a VmxChanges,
    pub power_on: bool,
    /// Where the files are staged before they are sent.
    pub scratch: &'a Path,
    pub threads: usize,
    /// Counts the bytes uploaded.
    pub progress: Option<&'a Arc<ReadProgress>>,
    /// Gives the restore up when set (Ctrl-C).
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
}

/// Restores `job.m` as a new VM on a host, powered on when asked. Refuses
/// a name a VM already has. Through the host's OVF import when it has one
/// (`import`); else the point's files are restored into the scratch
/// directory, uploaded to `[datastore] <name>/` (refusing a folder that
/// holds them already) and registered.
pub fn restore_to_host(job: &ToHost<'_>) -> Result<HostRestore> {
    let ToHost {
        repo,
        m,
        target,
        changes,
        power_on,
        scratch,
        threads,
        progress,
        ..
    } = *job;
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
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    if session.ovf_manager().is_some() {
        return super::import::restore_by_import(job);
    }
    // No OVF manager (a stripped or very old endpoint): the datastore's
    // file interface and RegisterVM.
    let local = restore_local(
        repo,
        m,
        scratch,
        changes,
        None,
        true,
        threads,
        progress.map(|p| &**p),
    )?;
    if let Some(p) = progress {
        let total: u64 = local
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|md| md.len())
            .sum();
        p.plan(total);
    }
    let uploaded = upload_vm_folder(target, &changes.name, &local.files, progress)?;
    let vm = register_on_host(target, &changes.name, power_on.then_some(!changes.new_uuid))?;
    Ok(HostRestore {
        vm,
        bytes_uploaded: uploaded,
        disk_bytes: m.disks.iter().map(|d| d.size_bytes).sum(),
        imported: false,
        seconds: started.elapsed().as_secs_f64(),
        heartbeat_seconds: None,
        heartbeat_note: None,
    })
}

/// Uploads a VM's files into `[datastore] <name>/` of `target`: flat
/// extents first, descriptors next, the .vmx last, so that a half-done
/// upload never looks like a registrable VM. Answers the bytes uploaded.
pub fn upload_vm_folder(
    target: &HostTarget<'_>,
    name: &str,
    files: &[PathBuf],
    progress: Option<&Arc<ReadProgress>>,
) -> Result<u64> {
    let mut uploaded = 0;
    let mut order = files.to_vec();
    order.sort_by_key(|f| {
        let n = f.to_string_lossy();
        if n.ends_with("-flat.vmdk") {
            0
        } else if n.ends_with(".vmdk") {
            1
        } else if n.ends_with(".vmx") {
            3
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
            path: format!("{name}/{file_name}"),
        };
        uploaded += datastore::upload_counted(
            target.session.transport(),
            &target.datacenter,
            &dest,
            f,
            false,
            progress.cloned(),
        )?;
    }
    Ok(uploaded)
}

/// Registers `[datastore] <name>/<name>.vmx` of `target` as VM `name`;
/// with `power_on` = `Some(moved)`, powers it on answering the host's
/// "moved or copied?" question: the VM's files are in a new folder, and a
/// host whose .vmx still holds the old `uuid.location` asks before it
/// powers on. "I moved it" keeps the VM's identity, "I copied it" gives
/// it a new one.
pub fn register_on_host(
    target: &HostTarget<'_>,
    name: &str,
    power_on: Option<bool>,
) -> Result<MoRef> {
    let vmx = format!("[{}] {name}/{name}.vmx", target.datastore);
    let info = target.session.run_task(
        &soap::register_vm(
            &target.folder,
            &vmx,
            Some(name),
            target.pool.as_ref(),
            Some(&target.host),
        ),
        Duration::from_secs(600),
    )?;
    let vm = info
        .result
        .ok_or_else(|| anyhow!("RegisterVM answered no VM"))?;
    if let Some(moved) = power_on {
        target
            .session
            .power_on_answering(&vm, moved, Duration::from_secs(600))?;
    }
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::{DiskEntry, PointKind, SkippedDisk, VmIdentity};

    fn disk(key: i32, backing: &str, slot: Option<&str>) -> DiskEntry {
        DiskEntry {
            device_key: key,
            label: format!("Hard disk {}", key - 1999),
            size_bytes: 1 << 20,
            chunk_size_bytes: 1 << 18,
            index_key: String::new(),
            index_sha256: String::new(),
            change_id: None,
            backing: Some(backing.into()),
            slot: slot.map(str::to_string),
            bytes_read: 0,
            chunks_new: 0,
            bytes_stored_new: 0,
            chunks_data: 0,
        }
    }

    fn point(disks: Vec<DiskEntry>, skipped: Vec<SkippedDisk>) -> Manifest {
        Manifest {
            format: crate::repo::manifest::FORMAT,
            point_id: "p".into(),
            vm: VmIdentity::new("db01", "u"),
            kind: PointKind::Full,
            parent: None,
            consistency: "crash".into(),
            created: String::new(),
            duration_ms: 0,
            disks,
            files: vec![],
            skipped_disks: skipped,
            mac: None,
        }
    }

    fn drill() -> VmxChanges {
        VmxChanges {
            name: "db01-r".into(),
            ..VmxChanges::default()
        }
    }

    /// The .vmx lists its disks in any order (a disk added later is
    /// written where the host puts it): each restored disk goes back to
    /// its controller and unit, not to the n-th line.
    #[test]
    fn disks_go_back_to_their_controller_and_unit_whatever_the_line_order() {
        let vmx =
            "scsi0:1.fileName = \"db01_1-000001.vmdk\"\nscsi0:0.fileName = \"db01-000001.vmdk\"\n";
        let m = point(
            vec![
                disk(2000, "[ds] db01/db01.vmdk", Some("scsi0:0")),
                disk(2001, "[ds] db01/db01_1.vmdk", Some("scsi0:1")),
            ],
            vec![],
        );
        assert_eq!(
            rewrite_vmx_for(vmx, &drill(), &m),
            "scsi0:1.fileName = \"db01-r_1.vmdk\"\nscsi0:0.fileName = \"db01-r.vmdk\"\n"
        );
        // A point without slots: by the files' names, a snapshot's
        // `-000001` aside.
        let old = point(
            vec![
                disk(2000, "[ds] db01/db01.vmdk", None),
                disk(2001, "[ds] db01/db01_1.vmdk", None),
            ],
            vec![],
        );
        assert_eq!(
            rewrite_vmx_for(vmx, &drill(), &old),
            "scsi0:1.fileName = \"db01-r_1.vmdk\"\nscsi0:0.fileName = \"db01-r.vmdk\"\n"
        );
    }

    #[test]
    fn a_left_out_disk_leaves_the_vmx_by_its_slot() {
        let vmx = "scsi0:2.present = \"TRUE\"\nscsi0:2.fileName = \"db01_2.vmdk\"\nscsi0:0.fileName = \"db01-000001.vmdk\"\nscsi0:2.mode = \"independent-persistent\"\nscsi0:1.fileName = \"db01_1-000001.vmdk\"\n";
        let m = point(
            vec![
                disk(2000, "[ds] db01/db01.vmdk", Some("scsi0:0")),
                disk(2001, "[ds] db01/db01_1.vmdk", Some("scsi0:1")),
            ],
            vec![SkippedDisk {
                device_key: 2002,
                file: "[ds] db01/db01_2.vmdk".into(),
                reason: "independent".into(),
                slot: Some("scsi0:2".into()),
            }],
        );
        assert_eq!(
            rewrite_vmx_for(vmx, &drill(), &m),
            "scsi0:0.fileName = \"db01-r.vmdk\"\nscsi0:1.fileName = \"db01-r_1.vmdk\"\n"
        );
    }

    #[test]
    fn a_new_uuid_brings_new_mac_addresses() {
        let vmx = "ethernet0.present = \"TRUE\"\nethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:00:00:01\"\nethernet1.addressType = \"vpx\"\nethernet1.generatedAddress = \"00:50:56:9a:12:34\"\nethernet1.generatedAddressOffset = \"0\"\nuuid.bios = \"42 1a\"\n";
        let out = rewrite_vmx(
            vmx,
            &VmxChanges {
                new_uuid: true,
                ..drill()
            },
        );
        assert_eq!(out, "ethernet0.present = \"TRUE\"\n");
        // Without --new-uuid the addresses stay.
        assert_eq!(rewrite_vmx(vmx, &drill()), vmx);
    }

    #[test]
    fn the_vmx_gets_the_new_name_disks_and_isolation() {
        let vmx = "displayName = \"db01\"\nuuid.bios = \"42 1a\"\nscsi0:0.fileName = \"db01.vmdk\"\nscsi0:1.fileName = \"db01_1.vmdk\"\nethernet0.present = \"TRUE\"\nethernet0.startConnected = \"TRUE\"\nnvram = \"db01.nvram\"\n";
        let out = rewrite_vmx(
            vmx,
            &VmxChanges {
                name: "db01-drill".into(),
                new_uuid: true,
                disconnect_network: true,
                network: None,
            },
        );
        assert_eq!(
            out,
            "displayName = \"db01-drill\"\nscsi0:0.fileName = \"db01-drill.vmdk\"\nscsi0:1.fileName = \"db01-drill_1.vmdk\"\nethernet0.present = \"TRUE\"\nnvram = \"db01-drill.nvram\"\nethernet0.startConnected = \"FALSE\"\n"
        );
    }

    #[test]
    fn a_drill_network_puts_every_card_on_its_port_group_connected() {
        let vmx = "ethernet0.present = \"TRUE\"\nethernet0.networkName = \"VM Network\"\nethernet0.startConnected = \"FALSE\"\nethernet1.present = \"TRUE\"\nethernet1.networkName = \"Storage\"\n";
        let out = rewrite_vmx(
            vmx,
            &VmxChanges {
                disconnect_network: true,
                network: Some("coffer-drill-isolated".into()),
                ..drill()
            },
        );
        assert!(
            !out.contains("VM Network") && !out.contains("Storage"),
            "{out}"
        );
        assert!(!out.contains("FALSE"), "{out}");
        for card in ["ethernet0", "ethernet1"] {
            assert!(
                out.contains(&format!("{card}.networkName = \"coffer-drill-isolated\"\n{card}.startConnected = \"TRUE\"")),
                "{out}"
            );
        }
    }
}
