//! Recoveries an administrator ran (migration 7): a restore onto a host or
//! an instant recovery, with the measured times the reports show beside
//! the drills'.

use super::db::args;
use chrono::{DateTime, Utc};

use super::{Catalog, CatalogError, parse_time, time_text};

/// One recovery of a VM's point onto a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub vm_uuid: String,
    pub vm_name: String,
    pub point_id: String,
    pub tier: String,
    pub source: String,
    /// The recovered VM's name on the source.
    pub name: String,
    /// `restore` or `instant`.
    pub method: String,
    pub started: DateTime<Utc>,
    pub power_on_seconds: Option<f64>,
    pub heartbeat_seconds: Option<f64>,
}

impl Catalog {
    pub fn record_recovery(&mut self, r: &Recovery) -> Result<(), CatalogError> {
        self.db.execute(
            "INSERT INTO recoveries (vm_uuid, vm_name, point_id, tier, source, name, method, \
             started, power_on_seconds, heartbeat_seconds) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            args![
                r.vm_uuid,
                r.vm_name,
                r.point_id,
                r.tier,
                r.source,
                r.name,
                r.method,
                time_text(r.started),
                r.power_on_seconds,
                r.heartbeat_seconds
            ],
        )?;
        Ok(())
    }

    /// Every recovery, oldest first.
    pub fn recoveries(&self) -> Result<Vec<Recovery>, CatalogError> {
        let rows = self.db.query(
            "SELECT vm_uuid, vm_name, point_id, tier, source, name, method, started, \
             power_on_seconds, heartbeat_seconds FROM recoveries ORDER BY started, id",
            &[],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(Recovery {
                    vm_uuid: r.get(0)?,
                    vm_name: r.get(1)?,
                    point_id: r.get(2)?,
                    tier: r.get(3)?,
                    source: r.get(4)?,
                    name: r.get(5)?,
                    method: r.get(6)?,
                    started: parse_time("recoveries.started", &r.get::<String>(7)?)?,
                    power_on_seconds: r.get(8)?,
                    heartbeat_seconds: r.get(9)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_is_recorded_with_its_times() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&t.path().join("catalog.db")).unwrap();
        let r = Recovery {
            vm_uuid: "u".into(),
            vm_name: "db01".into(),
            point_id: "p".into(),
            tier: "local".into(),
            source: "lab".into(),
            name: "db01-r".into(),
            method: "instant".into(),
            started: "2026-12-01T10:00:00Z".parse().unwrap(),
            power_on_seconds: Some(1.5),
            heartbeat_seconds: None,
        };
        c.record_recovery(&r).unwrap();
        assert_eq!(c.recoveries().unwrap(), vec![r]);
    }
}
