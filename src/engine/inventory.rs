//! The live inventory as an operator looks at it: every VM of the sources
//! with the policies that select it and its snapshot hygiene findings.

use std::time::Duration;

use anyhow::Result;

use crate::plan::hygiene::{self, SnapshotAlert};
use crate::policy::Config;
use crate::run::connect;
use crate::vsphere::VmRecord;

/// A coffer snapshot younger than this may belong to a running backup.
pub const IN_PROGRESS_GRACE: Duration = Duration::from_secs(6 * 3600);

/// One VM of a source.
pub struct InventoryRow {
    pub source: String,
    pub vm: VmRecord,
    /// The policies whose selectors take it (none: not backed up).
    pub policies: Vec<String>,
    pub alerts: Vec<SnapshotAlert>,
}

/// Reads every source (or only `only`); a source that cannot be read is
/// an error.
pub fn inventory(config: &Config, only: Option<&str>) -> Result<Vec<InventoryRow>> {
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    let dead_installation = super::gather::dead_installation(&config.settings.state_dir);
    if let Some(name) = only {
        config.source_named(name)?;
    }
    for source in config.sources.values() {
        if only.is_some_and(|s| s != source.name) {
            continue;
        }
        let conn = connect::connect(source, &config.settings.state_dir)?;
        for vm in conn.session.list_vms()? {
            let alerts = hygiene::snapshot_alerts(
                &vm,
                now,
                config.compliance.snapshot_max_age,
                IN_PROGRESS_GRACE,
                dead_installation.as_deref(),
            );
            let policies = crate::plan::planner::policies_of(config, &source.name, &vm)
                .into_iter()
                .map(|p| p.name.clone())
                .collect();
            rows.push(InventoryRow {
                source: source.name.clone(),
                vm,
                policies,
                alerts,
            });
        }
    }
    Ok(rows)
}
