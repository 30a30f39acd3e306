//! A lab VM's life as a host manages it: RegisterVM from a .vmx on the
//! datastore, power on and off (with the "moved or copied?" question a
//! host asks when a VM's files are not where its .vmx says they were),
//! AnswerVM, UnregisterVM and Destroy_Task.

use std::path::Path;

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
    let path = root.join(&v.vmx);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
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
            std::fs::write(&path, with_generated_macs(&text, &v.vmx))?;
            set_power(state, vm, true).map(|()| false)
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
            std::fs::write(&path, with_generated_macs(&text, &v.vmx))?;
            set_power(state, vm, true).map(|()| false)
        }
    }
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
    let path = root.join(&v.vmx);
    let mut text = std::fs::read_to_string(&path)?;
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
    std::fs::write(&path, with_generated_macs(&text, &v.vmx))?;
    let done = set_power(state, vm, true);
    Ok((question.task, done))
}

/// `[datastore1] dir/file` → `dir/file`.
pub fn datastore_path(path: &str) -> Result<String, Fault> {
    let rest = path
        .trim()
        .strip_prefix(&format!("[{DATASTORE}]"))
        .ok_or_else(|| {
            Fault::new(
                "InvalidDatastorePath",
                format!("Invalid datastore path '{path}'."),
            )
            .with("datastorePath", path)
        })?;
    let rel = rest.trim().trim_start_matches('/').to_string();
    if rel.split('/').any(|p| p == "..") || rel.is_empty() {
        return Err(Fault::new(
            "InvalidDatastorePath",
            format!("Invalid datastore path '{path}'."),
        )
        .with("datastorePath", path));
    }
    Ok(rel)
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
    let rel = datastore_path(vmx_path)?;
    let text = std::fs::read_to_string(root.join(&rel)).map_err(|e| {
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
    if state.vms.iter().any(|v| v.vmx == rel) {
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
        let text = std::fs::read_to_string(root.join(&descriptor)).map_err(|e| {
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
            datastore: None,
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
    };
    let moref = vm.moref();
    state.vms.push(vm);
    Ok(moref)
}

pub fn unregister(state: &mut State, vm: &str) -> Result<(), Fault> {
    let id = state.vm(vm)?.id;
    state.vms.retain(|v| v.id != id);
    Ok(())
}

/// Destroy_Task of a VM: unregistered and its folder deleted.
pub fn destroy(state: &mut State, root: &Path, vm: &str) -> Result<(), Fault> {
    let v = state.vm(vm)?.clone();
    if v.powered_on {
        return Err(Fault::new(
            "InvalidPowerState",
            "The attempted operation cannot be performed in the current state (poweredOn).",
        )
        .with("existingState", "poweredOn"));
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
