//! Reaching a source of the policy: log in to an ESXi host or vCenter with
//! the source's trust settings and secret, and know the datacenter its
//! datastore URLs need. A `kind = "lab"` source is the built-in lab, started
//! in-process on loopback for as long as the connection lives, with its
//! state (disks, snapshots, CBT) kept under the state directory.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::lab::{Lab, LabConfig, LabHandle};
use crate::policy::model::{LabMode, Source, SourceKind};
use crate::repo::backup::ReadShape;
use crate::vsphere::Session;
use crate::vsphere::datastore::ReadOptions;

/// A logged-in source.
pub struct Connected {
    pub source: String,
    pub session: Session,
    /// `dcPath` of datastore HTTP URLs for what has no datacenter of its
    /// own: the source's `datacenter`, `ha-datacenter` on a standalone
    /// host, empty on a vCenter without one. A VM's files are read through
    /// its own datacenter (`datacenter_of`).
    pub datacenter: String,
    /// The lab server, for a lab source: it stops when this is dropped.
    pub lab: Option<LabHandle>,
    /// How this source's datastores are read.
    pub read: ReadOptions,
}

/// The source's datastore read settings.
pub fn read_options(source: &Source) -> ReadOptions {
    ReadOptions {
        max_requests: source.max_requests as usize,
        shape: ReadShape {
            max_request_bytes: source.read_request,
            merge_gap_bytes: source.read_gap,
        },
        ..ReadOptions::default()
    }
}

/// Where a lab source keeps its state.
pub fn lab_state_dir(state_dir: &Path, source: &str) -> std::path::PathBuf {
    state_dir.join("lab").join(source)
}

impl Connected {
    /// `dcPath` of `vm`'s datastore URLs: the datacenter its parent chain
    /// leads to, else the source's `datacenter`.
    pub fn datacenter_of<'a>(&'a self, vm: &'a crate::vsphere::VmRecord) -> Result<&'a str> {
        match vm.datacenter.as_deref() {
            Some(dc) => Ok(dc),
            None if !self.datacenter.is_empty() => Ok(&self.datacenter),
            None => bail!(
                "the datacenter of VM {} on source `{}` is unknown (its inventory parents do not \
                 lead to one); name it with `datacenter = \"…\"` on the source",
                vm.name,
                self.source
            ),
        }
    }

    /// The VM named `name` on this source, as the host shows it now.
    pub fn vm(&self, name: &str) -> Result<crate::vsphere::VmRecord> {
        self.session
            .list_vms()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| anyhow!("VM {name} is gone from source `{}`", self.source))
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = self.session.logout();
    }
}

/// Logs in to a source; a lab source is started first. `state_dir` is the
/// policy's `settings.state_dir`.
pub fn connect(source: &Source, state_dir: &Path) -> Result<Connected> {
    if source.kind == SourceKind::Lab {
        let mut config = LabConfig::new(lab_state_dir(state_dir, &source.name));
        config.vms = source.lab_vms;
        config.vcenter = source.lab_mode == LabMode::Vcenter;
        // What has no datacenter of its own goes to the first one.
        let datacenter = crate::lab::inventory::datacenters(config.vcenter)[0]
            .path
            .to_string();
        let lab = Lab::start(config)
            .with_context(|| format!("starting the built-in lab of source `{}`", source.name))?;
        let session = Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
            .with_context(|| format!("logging in to the lab of source `{}`", source.name))?;
        return Ok(Connected {
            source: source.name.clone(),
            session,
            datacenter,
            lab: Some(lab),
            read: read_options(source),
        });
    }
    let url = source
        .url
        .as_deref()
        .ok_or_else(|| anyhow!("source `{}` has no url", source.name))?;
    let user = source
        .user
        .as_deref()
        .ok_or_else(|| anyhow!("source `{}` has no user", source.name))?;
    let password = source
        .password
        .as_ref()
        .ok_or_else(|| anyhow!("source `{}` has no password", source.name))?
        .read()
        .map_err(|e| anyhow!("source `{}`: password: {e}", source.name))?;
    let session = Session::connect(url, &source.tls, user, &password)
        .with_context(|| format!("logging in to source `{}` ({url})", source.name))?;
    let datacenter = match (
        &source.datacenter,
        session.service_content().about.is_vcenter(),
    ) {
        (Some(dc), _) => dc.clone(),
        (None, false) => "ha-datacenter".to_string(),
        // Each VM's own datacenter is found from the inventory.
        (None, true) => String::new(),
    };
    Ok(Connected {
        source: source.name.clone(),
        session,
        datacenter,
        lab: None,
        read: read_options(source),
    })
}
