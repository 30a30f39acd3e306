//! Checks that run inside a drill VM's guest through VMware Tools (guest
//! operations), so they need no network between coffer and the VM: the
//! drill's isolated network stays isolated. A check's command runs as the
//! drill's `guest_user` through the guest's shell with its output sent to
//! a file (`StartProgramInGuest`), coffer waits for its exit code
//! (`ListProcessesInGuest`: a process that has ended has `endTime` and
//! `exitCode`), then fetches and deletes the output file
//! (`InitiateFileTransferFromGuest`, `DeleteFileInGuest`), so a failure
//! carries the command's own words.

use std::time::{Duration, Instant};

use crate::vsphere::types::{GuestAuth, GuestProcess, MoRef};
use crate::vsphere::{Error, Session, VimFault};

/// The guest's shell: Windows guests get `cmd.exe`, others `/bin/sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Posix,
    Windows,
}

impl Shell {
    /// From the `.vmx`'s `guestOS` (`windows2019srv-64`, `other5xlinux-64`).
    pub fn of_guest_os(guest_os: Option<&str>) -> Shell {
        match guest_os {
            Some(g) if g.to_ascii_lowercase().starts_with("win") => Shell::Windows,
            _ => Shell::Posix,
        }
    }

    /// Program, arguments and output file that run `command` with its
    /// output (both streams) in a file of its own.
    fn wrap(self, command: &str, tag: &str) -> (&'static str, String, String) {
        match self {
            Shell::Posix => {
                let out = format!("/tmp/coffer-check-{tag}.out");
                let line = format!("{command} > {out} 2>&1");
                (
                    "/bin/sh",
                    format!("-c '{}'", line.replace('\'', "'\\''")),
                    out,
                )
            }
            Shell::Windows => {
                let out = format!("C:\\Windows\\Temp\\coffer-check-{tag}.txt");
                (
                    "C:\\Windows\\System32\\cmd.exe",
                    format!("/c \"{command} > {out} 2>&1\""),
                    out,
                )
            }
        }
    }

    /// A command that succeeds when `addr:port` accepts a TCP connection,
    /// from inside the guest.
    pub fn tcp_probe(self, addr: &str, port: u16) -> String {
        match self {
            Shell::Posix => format!("timeout 5 bash -c '</dev/tcp/{addr}/{port}'"),
            Shell::Windows => format!(
                "powershell -NoProfile -Command \"if (-not (Test-NetConnection -ComputerName {addr} -Port {port}).TcpTestSucceeded) {{ exit 1 }}\""
            ),
        }
    }
}

/// Runs `command` in the guest of `vm` until it ends or `timeout` passes.
/// `Ok` with a word on success; `Err` with the exit code and the command's
/// own output otherwise. Guest operations that are not available yet (the
/// guest still booting) are asked again until the timeout.
pub fn run(
    session: &Session,
    vm: &MoRef,
    auth: &GuestAuth,
    shell: Shell,
    command: &str,
    timeout: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let late = || started.elapsed() >= timeout;
    let limit = crate::policy::units::format_duration(timeout);
    let (pm, fm) = session
        .guest_managers()
        .map_err(|e| format!("guest operations: {e}"))?;
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| format!("the OS random source: {e}"))?;
    let tag = hex::encode(random);
    let (program, arguments, out_file) = shell.wrap(command, &tag);
    let pid = loop {
        match session.start_program_in_guest(&pm, vm, auth, program, &arguments) {
            Ok(pid) => break pid,
            Err(Error::Fault(VimFault::Other { name, .. }))
                if name == "GuestOperationsUnavailable" && !late() =>
            {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(format!("starting `{command}` in the guest: {e}")),
        }
    };
    let code = loop {
        match session.guest_process(&pm, vm, auth, pid) {
            Ok(Some(GuestProcess {
                exit_code: Some(c), ..
            })) => break c,
            Ok(_) if !late() => std::thread::sleep(Duration::from_millis(500)),
            Ok(_) => {
                return Err(format!(
                    "`{command}` did not finish in the guest within {limit} (pid {pid})"
                ));
            }
            Err(e) => return Err(format!("waiting for `{command}` in the guest: {e}")),
        }
    };
    let output = match session.take_guest_file(&fm, vm, auth, &out_file) {
        Ok(bytes) => super::drill::bounded_output(&[], &bytes, false),
        Err(e) => format!("(its output could not be fetched: {e})"),
    };
    if code == 0 {
        return Ok(());
    }
    Err(format!(
        "`{command}` failed in the guest (exit code {code}){}",
        if output.is_empty() {
            String::new()
        } else {
            format!("; its output: {output}")
        }
    ))
}
