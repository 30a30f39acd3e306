//! A lab VM's life as a host manages it: RegisterVM from a .vmx on the
//! datastore, power on and off (with the "moved or copied?" question a
//! host asks when a VM's files are not where its .vmx says they were),
//! AnswerVM, UnregisterVM and Destroy_Task.

use std::path::Path;

use super::datastore_system::{self, Files};
use super::disk::{Disk, Layer};
use super::state::{self, DATASTORE, Fault, State, Vm, hex_id, uuid_of};
use crate::vsphere::vmx;

pub fn set_power(state: &mut State, vm: &str, on: bool) -> Result<(), Fault> {
    let v = state.vm_mut(vm)?;
    if v.powered_on == on {
        let now = if on { "poweredOn" } else { "poweredOff" };
        return Err(Fault::new(
            "InvalidPowerState",
            format!("The attempted operation cannot be performed in the current state ({now})."),
        )
        .with("existingState", now));
    }
    v.powered_on = on;
    Ok(())
}

/// PowerOnVM_Task, run as task `task`: `Ok(true)` when the VM asks a
/// question first and the task waits for AnswerVM (see `answer`). A host
/// compares the .vmx's `uuid.location`, a hash of where the VM's files
/// were, with where they are now; when they differ the VM "may have been
/// moved or copied" (`msg.uuid.altered`) and the power-on waits for the
/// answer (VMware Workstation and ESX documentation, "Virtual machine UUID":
/// the UUID changes only when the VM is moved or copied, and the user is
/// asked which; Apache CloudStack's VMware resource answers this question
/// programmatically before its power-ons complete). A .vmx without
/// `uuid.location` gets one, and a `uuid.bios`, without a question.
pub fn power_on(state: &mut State, root: &Path, vm: &str, task: &str) -> Result<bool, Fault> {
    let next = state.next_id;
    super::import::refuse_while_importing(state.vm(vm)?)?;
    let mut files = Files::of(state, root, state.vm(vm)?)?;
    let v = state.vm_mut(vm)?;
    if v.question.is_some() {
        return Err(Fault::new(
            "InvalidState",
            format!("VM {} is waiting for an answer to its question", v.name),
        ));
    }
    if v.powered_on {
        return set_power(state, vm, true).map(|()| false);
    }
    let text = files.read_string(&v.vmx).unwrap_or_default();
    let here = state::location_uuid(&v.vmx);
    match vmx::value(&text, "uuid.location") {
        Some(there) if there != here => {
            v.question = Some(state::Question {
                id: next.to_string(),
                task: task.to_string(),
            });
            state.next_id += 1;
            Ok(true)
        }
        Some(_) => {
            let vmx = v.vmx.clone();
            files.write(&vmx, with_generated_macs(&text, &vmx).as_bytes())?;
            start(state, vm, files).map(|()| false)
        }
        None => {
            let mut text = vmx::with_value(&text, "uuid.location", &here);
            if vmx::value(&text, "uuid.bios").is_none() {
                text = vmx::with_value(
                    &text,
                    "uuid.bios",
                    &state::uuid_bytes(&format!("bios/{}", v.vmx)),
                );
            }
            let vmx = v.vmx.clone();
            files.write(&vmx, with_generated_macs(&text, &vmx).as_bytes())?;
            start(state, vm, files).map(|()| false)
        }
    }
}

/// The end of a power-on, once the .vmx is written. A NAS VM's host locks
/// the disks it opens with a lock file beside each (VMware KB 1007909),
/// reads the .vmx back and boots the guest from its disks read through
/// NFS; what it found is kept for property reads.
fn start(state: &mut State, vm: &str, files: Files) -> Result<(), Fault> {
    if let Files::Nas(mut nas) = files {
        let v = state.vm(vm)?.clone();
        let owner = v.host.clone().unwrap_or_else(|| "ha-host".into());
        let mut locks = Vec::new();
        for d in &v.disks {
            locks.push(datastore_system::take_lock(
                &mut nas,
                &d.layers[0].data_file,
                &owner,
            )?);
        }
        let text = String::from_utf8_lossy(&nas.read_all(&v.vmx)?).into_owned();
        let boots = datastore_system::boots_over_nfs(&mut nas, &v);
        let v = state.vm_mut(vm)?;
        v.nas_locks = locks;
        v.nas_vmx = Some(text);
        v.nas_boots = Some(boots);
    }
    set_power(state, vm, true)
}

/// PowerOffVM_Task. A NAS VM's host lets go of its lock files; when the
/// NFS server is gone the VM is off all the same and the stale lock files
/// stay, as on ESXi (VMware KB 1007909 tells how to remove them).
pub fn power_off(state: &mut State, root: &Path, vm: &str) -> Result<(), Fault> {
    set_power(state, vm, false)?;
    let v = state.vm(vm)?;
    if v.nas.is_none() {
        return Ok(());
    }
    if let Ok(Files::Nas(mut nas)) = Files::of(state, root, v) {
        for lock in &v.nas_locks {
            let _ = nas.remove(lock);
        }
    }
    let v = state.vm_mut(vm)?;
    v.nas_locks.clear();
    v.nas_boots = None;
    Ok(())
}

/// `text` with a generated MAC address for every present network card
/// that has none: a host generates one at power-on for a card whose
/// `address`, `addressType` and `generatedAddress` are gone (VMware ESX
/// Server Administration Guide, "Using MAC Addresses").
fn with_generated_macs(text: &str, seed: &str) -> String {
    let cards: Vec<String> = vmx::entries(text)
        .filter(|(k, v)| {
            k.to_ascii_lowercase().ends_with(".present") && v.eq_ignore_ascii_case("true")
        })
        .filter_map(|(k, _)| k.split_once('.').map(|(card, _)| card.to_string()))
        .filter(|card| card.to_ascii_lowercase().starts_with("ethernet"))
        .collect();
    let mut out = text.to_string();
    for card in cards {
        let has = |key: &str| vmx::value(&out, &format!("{card}.{key}")).is_some();
        if !has("address") && !has("generatedAddress") {
            out = vmx::with_value(&out, &format!("{card}.addressType"), "generated");
            out = vmx::with_value(
                &out,
                &format!("{card}.generatedAddress"),
                &state::lab_mac(&format!("{seed}/{card}")),
            );
        }
    }
    out
}

/// AnswerVM: `choice` "1" (I moved it) keeps the VM's BIOS UUID and MAC
/// addresses and records where it is now; "2" (I copied it) gives it a new
/// BIOS UUID and new generated MAC addresses; "0" (Cancel) fails the
/// power-on. Answers the power-on task the question held and its outcome.
pub fn answer(
    state: &mut State,
    root: &Path,
    vm: &str,
    question_id: &str,
    choice: &str,
) -> Result<(String, Result<(), Fault>), Fault> {
    let mut files = Files::of(state, root, state.vm(vm)?)?;
    let v = state.vm_mut(vm)?;
    let question = v
        .question
        .clone()
        .filter(|q| q.id == question_id)
        .ok_or_else(|| {
            Fault::new(
                "InvalidArgument",
                format!("no question {question_id} on VM {}", v.name),
            )
            .with("invalidProperty", "questionId")
        })?;
    if !matches!(choice, "0" | "1" | "2") {
        return Err(Fault::new("InvalidArgument", format!("no choice {choice}"))
            .with("invalidProperty", "answerChoice"));
    }
    v.question = None;
    if choice == "0" {
        return Ok((
            question.task,
            Err(Fault::new(
                "RequestCanceled",
                "The power-on was cancelled: the question whether the VM was moved or copied was not answered",
            )),
        ));
    }
    let mut text = files.read_string(&v.vmx)?;
    text = vmx::with_value(&text, "uuid.location", &state::location_uuid(&v.vmx));
    if choice == "2" {
        text = vmx::with_value(
            &text,
            "uuid.bios",
            &state::uuid_bytes(&format!("bios/{}/{}", v.vmx, v.id)),
        );
        let cards: Vec<String> = vmx::entries(&text)
            .filter(|(k, _)| k.to_ascii_lowercase().ends_with(".generatedaddress"))
            .map(|(k, _)| k.to_string())
            .collect();
        for key in cards {
            text = vmx::with_value(
                &text,
                &key,
                &state::lab_mac(&format!("{}/{}/{key}", v.vmx, v.id)),
            );
        }
    }
    let vmx = v.vmx.clone();
    files.write(&vmx, with_generated_macs(&text, &vmx).as_bytes())?;
    let done = start(state, vm, files);
    Ok((question.task, done))
}

/// `[datastore1] dir/file` → `dir/file`.
pub fn datastore_path(path: &str) -> Result<String, Fault> {
    match split_datastore_path(path)? {
        (ds, rel) if ds == DATASTORE => Ok(rel),
        _ => Err(invalid_path(path)),
    }
}

fn invalid_path(path: &str) -> Fault {
    Fault::new(
        "InvalidDatastorePath",
        format!("Invalid datastore path '{path}'."),
    )
    .with("datastorePath", path)
}

/// `[name] dir/file` → (`name`, `dir/file`), for any datastore name.
pub fn split_datastore_path(path: &str) -> Result<(String, String), Fault> {
    let (ds, rest) = path
        .trim()
        .strip_prefix('[')
        .and_then(|p| p.split_once(']'))
        .ok_or_else(|| invalid_path(path))?;
    let rel = rest.trim().trim_start_matches('/').to_string();
    if rel.split('/').any(|p| p == "..") || rel.is_empty() || ds.is_empty() {
        return Err(invalid_path(path));
    }
    Ok((ds.to_string(), rel))
}

/// `key = "value"` lines of a .vmx.
fn vmx_values(text: &str) -> Vec<(String, String)> {
    crate::vsphere::vmx::entries(text)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sectors and extent file of a flat descriptor's `RW <sectors> <type> "<file>"` line.
fn descriptor_extent(text: &str) -> Option<(u64, String)> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == "RW").then_some(())?;
        let sectors = parts.next()?.parse().ok()?;
        let _kind = parts.next()?;
        let file = l.split('"').nth(1)?.to_string();
        Some((sectors, file))
    })
}

/// RegisterVM: a VM from a .vmx already on the datastore (uploaded by a
/// restore), its disks the flat VMDKs it names. Registered powered off.
pub fn register(
    state: &mut State,
    root: &Path,
    vmx_path: &str,
    name: Option<&str>,
) -> Result<String, Fault> {
    let (ds, rel) = split_datastore_path(vmx_path)?;
    if ds != DATASTORE && state.nas(&ds).is_none() {
        return Err(invalid_path(vmx_path));
    }
    // A VM on a NAS datastore is read through NFS by the host that
    // mounted it, and sits on that host.
    let nas = (ds != DATASTORE).then(|| ds.clone());
    let host = state.nas(&ds).map(|d| d.host.clone());
    let mut files = Files::of_datastore(state, root, &ds)?;
    let text = files.read_string(&rel).map_err(|e| {
        Fault::new("NotFound", format!("File {vmx_path} was not found: {e}")).with("file", vmx_path)
    })?;
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let values = vmx_values(&text);
    let display = values
        .iter()
        .find(|(k, _)| k == "displayName")
        .map(|(_, v)| v.clone());
    let name = name
        .map(str::to_string)
        .or(display)
        .unwrap_or_else(|| rel.clone());
    if state
        .vms
        .iter()
        .any(|v| v.vmx == rel && v.home_datastore() == ds)
    {
        return Err(Fault::new(
            "AlreadyExists",
            format!("The specified key, name, or identifier '{vmx_path}' already exists."),
        )
        .with("name", vmx_path));
    }
    let mut disks = Vec::new();
    for (k, v) in &values {
        let Some(slot) = k.strip_suffix(".fileName") else {
            continue;
        };
        if !v.ends_with(".vmdk") {
            continue;
        }
        let descriptor = if dir.is_empty() {
            v.clone()
        } else {
            format!("{dir}/{v}")
        };
        let text = files.read_string(&descriptor).map_err(|e| {
            Fault::new("FileNotFound", format!("{descriptor}: {e}"))
                .with("file", descriptor.clone())
        })?;
        let (sectors, extent) = descriptor_extent(&text).ok_or_else(|| {
            Fault::new(
                "InvalidVmConfig",
                format!("{descriptor} has no extent line"),
            )
            .with("property", slot)
        })?;
        let data_file = if dir.is_empty() {
            extent
        } else {
            format!("{dir}/{extent}")
        };
        disks.push(Disk {
            key: 2000 + disks.len() as i32,
            capacity_bytes: sectors * 512,
            uuid: format!("6000C29{}", hex_id(&format!("{rel}/{slot}"), 25)),
            layers: vec![Layer {
                descriptor,
                data_file,
                blocks: Default::default(),
                format: None,
                frozen_by: None,
            }],
            cbt: None,
            next_delta: 0,
            mode: None,
            datastore: nas.clone(),
            rdm: None,
        });
    }
    let id = state.next_id;
    state.next_id += 1;
    let vm = Vm {
        id,
        instance_uuid: uuid_of(&format!("instance/{rel}/{id}")),
        name,
        vmx: rel,
        powered_on: false,
        cbt_enabled: false,
        cbt_reset: false,
        consolidation_needed: false,
        encryption_key: None,
        delta_format: None,
        question: None,
        disks,
        snapshots: Vec::new(),
        nas_vmx: nas.is_some().then_some(text),
        nas,
        host,
        folder: None,
        pool: None,
        nas_boots: None,
        nas_locks: Vec::new(),
        import_lease: None,
    };
    let moref = vm.moref();
    state.vms.push(vm);
    Ok(moref)
}

pub fn unregister(state: &mut State, vm: &str) -> Result<(), Fault> {
    super::import::refuse_while_importing(state.vm(vm)?)?;
    let id = state.vm(vm)?.id;
    state.vms.retain(|v| v.id != id);
    Ok(())
}

/// Destroy_Task of a VM: unregistered and its folder deleted.
pub fn destroy(state: &mut State, root: &Path, vm: &str) -> Result<(), Fault> {
    let v = state.vm(vm)?.clone();
    super::import::refuse_while_importing(&v)?;
    if v.powered_on {
        return Err(Fault::new(
            "InvalidPowerState",
            "The attempted operation cannot be performed in the current state (poweredOn).",
        )
        .with("existingState", "poweredOn"));
    }
    if v.nas.is_some() {
        return destroy_on_nas(state, root, &v);
    }
    unregister(state, vm)?;
    let dir = v.dir();
    if !dir.is_empty() && !state.vms.iter().any(|o| o.dir() == dir) {
        std::fs::remove_dir_all(root.join(dir))?;
        // Disks a Storage vMotion put on another datastore, in a folder
        // of the same name there.
        for d in v.disks.iter().filter(|d| d.datastore.is_some()) {
            match std::fs::remove_dir_all(d.folder(root).join(dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Destroy_Task of a VM on a NAS datastore: unregistered and the files in
/// its folder removed through NFS REMOVE. The folder itself stays when
/// the server refuses to remove it (coffer's export keeps its VM folder).
fn destroy_on_nas(state: &mut State, root: &Path, v: &Vm) -> Result<(), Fault> {
    let Files::Nas(mut nas) = Files::of(state, root, v)? else {
        unreachable!("a NAS VM's files are on NFS");
    };
    unregister(state, &v.moref())?;
    let dir = v.dir();
    for name in nas.list(dir)? {
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        nas.remove(&path)?;
    }
    if !dir.is_empty() {
        // ESXi removes the VM's folder too; an export that keeps it (as
        // coffer's does) answers NFS3ERR_ACCES, and the files are gone.
        match nas.remove_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}
