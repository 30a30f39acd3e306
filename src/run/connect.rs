//! Reaching a source of the policy: log in to an ESXi host or vCenter with
//! the source's trust settings and secret, and know the datacenter its
//! datastore URLs need.

use anyhow::{Context, Result, anyhow, bail};

use crate::policy::model::{Source, SourceKind};
use crate::vsphere::Session;

/// A logged-in source.
pub struct Connected {
    pub source: String,
    pub session: Session,
    /// `dcPath` of datastore HTTP URLs.
    pub datacenter: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = self.session.logout();
    }
}

/// Logs in to an ESXi or vCenter source.
pub fn connect(source: &Source) -> Result<Connected> {
    if source.kind == SourceKind::Lab {
        bail!(
            "source `{}` is the built-in lab; start it with `coffer lab serve`",
            source.name
        );
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
        (None, true) => bail!(
            "source `{}` is a vCenter: name the datacenter of its VMs with `datacenter = \"…\"`",
            source.name
        ),
    };
    Ok(Connected {
        source: source.name.clone(),
        session,
        datacenter,
    })
}
