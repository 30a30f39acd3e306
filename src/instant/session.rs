//! An instant-recovery session as coffer keeps it between commands:
//! `<state dir>/instant/<name>/session.json`, beside the session's overlay
//! (`overlay/`), its NFS server's log (`server.log`) and the `ready` file
//! the server writes once it listens.
//!
//! The session file is written before each step on the host, so that
//! `stop` undoes whatever was done, whichever step failed or was cut.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::inventory::MoRef;
use crate::vsphere::placement::PlaceNames;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The recovered VM's name, also the session's.
    pub name: String,
    /// The VM that was backed up, and its point.
    pub vm: String,
    pub point: String,
    pub tier: String,
    /// The policy's source the VM runs on, and on a vCenter where it was
    /// asked to run (host, folder, pool by name) and the host used.
    pub source: String,
    #[serde(flatten)]
    pub place: PlaceNames,
    #[serde(default)]
    pub host_ref: Option<(String, String)>,
    /// Where coffer's NFS server listens, and the export's path.
    pub address: String,
    pub export: String,
    /// The datastore's name on the host.
    pub datastore: String,
    pub new_uuid: bool,
    pub network: Option<String>,
    #[serde(default)]
    pub disconnect_network: bool,
    pub started: DateTime<Utc>,
    /// The NFS server's process.
    pub pid: Option<u32>,
    /// What was made on the host, once made.
    pub datastore_ref: Option<(String, String)>,
    pub vm_ref: Option<(String, String)>,
    /// Seconds from the start to the guest's first heartbeat.
    pub heartbeat_seconds: Option<f64>,
}

impl Session {
    pub fn datastore_moref(&self) -> Option<MoRef> {
        self.datastore_ref
            .as_ref()
            .map(|(k, v)| MoRef::new(k.clone(), v.clone()))
    }

    /// The host the datastore is mounted on (`ha-host` on a standalone
    /// host).
    pub fn host_moref(&self) -> MoRef {
        self.host_ref.as_ref().map_or_else(
            || MoRef::new("HostSystem", "ha-host"),
            |(k, v)| MoRef::new(k.clone(), v.clone()),
        )
    }

    pub fn vm_moref(&self) -> Option<MoRef> {
        self.vm_ref
            .as_ref()
            .map(|(k, v)| MoRef::new(k.clone(), v.clone()))
    }
}

/// Where sessions live under the state directory.
pub fn sessions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("instant")
}

pub fn session_dir(state_dir: &Path, name: &str) -> PathBuf {
    sessions_dir(state_dir).join(name)
}

pub fn overlay_dir(dir: &Path) -> PathBuf {
    dir.join("overlay")
}

pub fn ready_file(dir: &Path) -> PathBuf {
    dir.join("ready")
}

pub fn log_file(dir: &Path) -> PathBuf {
    dir.join("server.log")
}

/// Writes the session (atomically: a temporary file renamed over it).
pub fn save(dir: &Path, s: &Session) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("session.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("session.json"))
        .with_context(|| format!("writing the session in {}", dir.display()))
}

pub fn load(dir: &Path) -> Result<Session> {
    let path = dir.join("session.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Every session under the state directory, by name.
pub fn list(state_dir: &Path) -> Result<Vec<(PathBuf, Session)>> {
    let root = sessions_dir(state_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for e in entries {
        let dir = e?.path();
        if dir.join("session.json").exists() {
            out.push((dir.clone(), load(&dir)?));
        }
    }
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok(out)
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}
