//! VMware Tools guest operations on the lab's guests, as a host serves them
//! (`ServiceContent.guestOperationsManager`, its `processManager` and
//! `fileManager`; vSphere API reference, GuestOperationsManager,
//! GuestProcessManager, GuestFileManager):
//!
//! - `StartProgramInGuest` runs a program in the guest as the user of the
//!   `NamePasswordAuthentication` and answers its pid; a guest whose Tools
//!   are not running answers `GuestOperationsUnavailable`, wrong
//!   credentials `InvalidGuestLogin`, a program that is not there
//!   `FileNotFound`.
//! - `ListProcessesInGuest` answers `GuestProcessInfo`s; a process that has
//!   ended has its `endTime` and `exitCode`.
//! - `InitiateFileTransferFromGuest` answers a `FileTransferInformation`
//!   whose `url` (host `*`, "replace with the host's address") serves the
//!   file once over HTTPS (`/guestFile?id=…`); `DeleteFileInGuest` removes
//!   a file.
//!
//! A lab guest is Linux (`guestOS = "other5xlinux-64"`) with the user
//! `root`, whose password is the .vmx's `guestinfo.lab.guest_password`
//! (default `coffer-lab`). It runs only `/bin/sh -c 'COMMAND > FILE 2>&1'`
//! with COMMAND from a small built-in set: `systemctl is-active NAME…`
//! (the services the .vmx's `guestinfo.lab.services` lists are active,
//! default `sshd`), `true`, `false`, `echo …`, and `[timeout N] bash -c
//! '</dev/tcp/ADDR/PORT'` (open when PORT is one the guest declares in
//! `guestinfo.lab.tcp_ports`). Anything else is "not found" (127). A
//! program ends as it starts; a real one may run for a while, which is why
//! coffer polls `ListProcessesInGuest`.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::state::{Fault, Vm};
use super::wire::time;
use crate::vsphere::soap::escape;

/// A property of the GuestOperationsManager: the moref of one of its
/// managers, as ESXi names them.
pub fn manager_prop(paths: &[String], all: bool, name: &str, kind: &str) -> String {
    if !all && !paths.iter().any(|p| p == name) {
        return String::new();
    }
    let value = match kind {
        "GuestProcessManager" => "ha-guest-operations-process-manager",
        _ => "ha-guest-operations-file-manager",
    };
    format!(
        "<propSet><name>{name}</name>{}</propSet>",
        super::wire::moref("val", kind, value)
    )
}

/// The default password of a lab guest's `root`.
pub const DEFAULT_GUEST_PASSWORD: &str = "coffer-lab";

#[derive(Debug, Default)]
pub struct GuestOps {
    next_pid: u64,
    processes: Vec<Process>,
    /// (VM moref, path) → content.
    files: HashMap<(String, String), Vec<u8>>,
    /// One-use download tokens → content.
    transfers: HashMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Process {
    vm: String,
    pid: u64,
    name: String,
    cmd_line: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    exit_code: i32,
}

/// The checks every guest operation makes: Tools running, credentials.
pub fn admit(vm: &Vm, root: &Path, user: &str, password: &str) -> Result<(), Fault> {
    if !vm.tools_running(root) {
        return Err(Fault::new(
            "GuestOperationsUnavailable",
            "The guest operations agent could not be contacted.",
        ));
    }
    let text = vm.vmx_text(root);
    let wanted = crate::vsphere::vmx::value(&text, "guestinfo.lab.guest_password")
        .unwrap_or(DEFAULT_GUEST_PASSWORD);
    if user != "root" || password != wanted {
        return Err(Fault::new(
            "InvalidGuestLogin",
            "Failed to authenticate with the guest operating system using the supplied credentials.",
        ));
    }
    Ok(())
}

/// `-c 'COMMAND > FILE 2>&1'` → (COMMAND, FILE).
fn redirected(arguments: &str) -> Option<(String, String)> {
    let quoted = arguments.trim().strip_prefix("-c ")?.trim();
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    let inner = inner.replace("'\\''", "'");
    let (command, rest) = inner.rsplit_once(" > ")?;
    let file = rest.strip_suffix(" 2>&1")?;
    Some((command.to_string(), file.trim().to_string()))
}

/// Runs a built-in command: (exit code, output).
fn run_builtin(command: &str, vm: &Vm, root: &Path) -> (i32, String) {
    let text = vm.vmx_text(root);
    let words: Vec<&str> = command.split_whitespace().collect();
    let words: &[&str] = match words.as_slice() {
        ["timeout", _, rest @ ..] => rest,
        all => all,
    };
    match words {
        ["true"] => (0, String::new()),
        ["false"] => (1, String::new()),
        ["echo", rest @ ..] => (0, format!("{}\n", rest.join(" "))),
        ["systemctl", "is-active", names @ ..] if !names.is_empty() => {
            let active: Vec<&str> = crate::vsphere::vmx::value(&text, "guestinfo.lab.services")
                .unwrap_or("sshd")
                .split(',')
                .map(str::trim)
                .collect();
            let mut out = String::new();
            let mut all = true;
            for n in names {
                let on = active.contains(n);
                all &= on;
                out.push_str(if on { "active\n" } else { "inactive\n" });
            }
            (if all { 0 } else { 3 }, out)
        }
        ["bash", "-c", script] => {
            let target = script
                .trim_matches('\'')
                .trim_start_matches('<')
                .strip_prefix("/dev/tcp/")
                .and_then(|t| t.rsplit_once('/'));
            match target {
                Some((addr, port)) => {
                    let open = port
                        .parse::<u16>()
                        .is_ok_and(|p| super::net::declared_ports(vm, root).contains(&p));
                    if open {
                        (0, String::new())
                    } else {
                        (
                            1,
                            format!(
                                "bash: connect: Connection refused\nbash: line 1: /dev/tcp/{addr}/{port}: Connection refused\n"
                            ),
                        )
                    }
                }
                None => (
                    2,
                    format!("bash: {script}: not supported by the lab guest\n"),
                ),
            }
        }
        [name, ..] => (127, format!("sh: 1: {name}: not found\n")),
        [] => (0, String::new()),
    }
}

impl GuestOps {
    /// `StartProgramInGuest`: the pid.
    pub fn start(
        &mut self,
        vm: &Vm,
        root: &Path,
        program: &str,
        arguments: &str,
    ) -> Result<u64, Fault> {
        if program != "/bin/sh" {
            return Err(
                Fault::new("FileNotFound", format!("File {program} was not found"))
                    .with("file", program),
            );
        }
        // Output goes where the command line sends it; a command line the
        // lab cannot read fails as a shell's syntax error would.
        let exit_code = match redirected(arguments) {
            Some((command, file)) => {
                let (code, out) = run_builtin(&command, vm, root);
                self.files.insert((vm.moref(), file), out.into_bytes());
                code
            }
            None => 2,
        };
        self.next_pid += 1;
        let now = Utc::now();
        let pid = 1000 + self.next_pid;
        self.processes.push(Process {
            vm: vm.moref(),
            pid,
            name: program.into(),
            cmd_line: format!("\"{program}\" {arguments}"),
            start: now,
            end: now,
            exit_code,
        });
        Ok(pid)
    }

    /// `ListProcessesInGuest` of `pids` (all of the VM's when empty).
    pub fn list(&self, vm: &Vm, pids: &[u64]) -> String {
        let mut out = String::new();
        for p in self
            .processes
            .iter()
            .filter(|p| p.vm == vm.moref() && (pids.is_empty() || pids.contains(&p.pid)))
        {
            out.push_str(&format!(
                "<returnval><name>{}</name><pid>{}</pid><owner>root</owner><cmdLine>{}</cmdLine><startTime>{}</startTime><endTime>{}</endTime><exitCode>{}</exitCode></returnval>",
                escape(&p.name),
                p.pid,
                escape(&p.cmd_line),
                time(p.start),
                time(p.end),
                p.exit_code
            ));
        }
        out
    }

    /// `InitiateFileTransferFromGuest`: the FileTransferInformation, its
    /// URL served once by `take_transfer`.
    pub fn initiate_from(&mut self, vm: &Vm, path: &str, token: String) -> Result<String, Fault> {
        let content = self
            .files
            .get(&(vm.moref(), path.to_string()))
            .cloned()
            .ok_or_else(|| {
                Fault::new("FileNotFound", format!("File {path} was not found")).with("file", path)
            })?;
        let size = content.len();
        self.transfers.insert(token.clone(), content);
        Ok(format!(
            "<returnval><attributes xsi:type=\"GuestPosixFileAttributes\"></attributes><size>{size}</size><url>https://*/guestFile?id={token}&amp;token={token}</url></returnval>"
        ))
    }

    /// `DeleteFileInGuest`.
    pub fn delete(&mut self, vm: &Vm, path: &str) -> Result<(), Fault> {
        self.files
            .remove(&(vm.moref(), path.to_string()))
            .map(|_| ())
            .ok_or_else(|| {
                Fault::new("FileNotFound", format!("File {path} was not found")).with("file", path)
            })
    }

    /// The content behind a transfer token, once.
    pub fn take_transfer(&mut self, token: &str) -> Option<Vec<u8>> {
        self.transfers.remove(token)
    }
}
