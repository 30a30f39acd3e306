//! The catalog as the engine opens it: where it is (the state directory,
//! or the policy's `settings.catalog`), what happens when it is damaged
//! (moved aside and rebuilt from every tier and its log, so no command is
//! stuck on it), and syncing it with the tiers (refresh reports drift;
//! rebuild forgets a tier and reads it again).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::observer::{Event, Observer};
use super::tiers::open_tier;
use crate::catalog::{self, Catalog, CopyRecord, Drift, PointRecord, VmRecord};
use crate::policy::Config;
use crate::policy::model::CatalogLocation;
use crate::repo::PointRef;

/// Where the catalog is: in `state` when given, else where the policy
/// keeps it.
pub fn catalog_location(state: Option<&Path>, config: &Config) -> CatalogLocation {
    match state {
        Some(dir) => catalog_in(dir),
        None => config.settings.catalog.clone(),
    }
}

/// The catalog's file in a state directory.
pub fn catalog_in(state: &Path) -> CatalogLocation {
    CatalogLocation::File(state.join(catalog::FILE_NAME))
}

/// Opens the catalog at `at` to read it; refuses, saying how to build
/// one, when there is none.
pub fn open_existing(at: &CatalogLocation, observer: &dyn Observer) -> Result<Catalog> {
    if !at.exists() {
        bail!("there is no catalog at {at}; build one with `coffer catalog rebuild --tier NAME`");
    }
    open_catalog(at, None, observer)
}

/// Opens the catalog. A damaged one (not a database, corrupt) is moved
/// aside and, when the policy directory is known, rebuilt at once from
/// every tier and its log; the observer is told either way.
pub fn open_catalog(
    at: &CatalogLocation,
    config: Option<&Config>,
    observer: &dyn Observer,
) -> Result<Catalog> {
    let say = |m: String| observer.event(&Event::Message(m));
    let (mut catalog, moved) =
        Catalog::open_or_replace_at(at).with_context(|| format!("opening the catalog {at}"))?;
    let Some(moved) = moved else {
        return Ok(catalog);
    };
    say(format!(
        "coffer: the catalog {at} could not be opened ({}); it was moved to {}",
        moved.error,
        moved.path.display()
    ));
    let Some(config) = config else {
        say(
            "coffer: a new, empty catalog was created; `coffer catalog rebuild --tier NAME` fills it from the tiers"
                .into(),
        );
        return Ok(catalog);
    };
    for name in config.tiers.keys() {
        let rebuilt = open_tier(config, name).and_then(|repo| {
            let drift = catalog.rebuild_tier(name, &repo)?;
            let log = catalog.replay_tier_log(&repo)?;
            Ok((drift, log))
        });
        match rebuilt {
            Ok((drift, log)) => say(format!(
                "coffer: catalog rebuilt from tier `{name}`: {} points, {} logged events replayed{}",
                drift.listed,
                log.applied,
                if log.rejected > 0 {
                    format!(", {} log objects rejected", log.rejected)
                } else {
                    String::new()
                }
            )),
            Err(e) => say(format!(
                "coffer: could not rebuild the catalog from tier `{name}`: {e:#}; \
                 run `coffer catalog rebuild --tier {name}` once it can be read"
            )),
        }
    }
    Ok(catalog)
}

/// Refreshes (or, with `rebuild`, rebuilds) the catalog from the named
/// tiers (every tier when none is named); answers each tier's drift.
pub fn sync_tiers(
    config: &Config,
    catalog: &mut Catalog,
    tiers: &[String],
    rebuild: bool,
) -> Result<Vec<Drift>> {
    let names: Vec<String> = if tiers.is_empty() {
        config.tiers.keys().cloned().collect()
    } else {
        tiers.to_vec()
    };
    if names.is_empty() {
        bail!("the policy directory declares no tiers");
    }
    let mut drifts = Vec::new();
    for name in &names {
        let repo = open_tier(config, name)?;
        let drift = if rebuild {
            catalog.rebuild_tier(name, &repo).and_then(|d| {
                catalog.replay_tier_log(&repo)?;
                Ok(d)
            })
        } else {
            catalog.reread_tier(name, &repo)
        }
        .with_context(|| {
            format!(
                "{} the catalog from tier `{name}`",
                if rebuild { "rebuilding" } else { "refreshing" }
            )
        })?;
        drifts.push(drift);
    }
    Ok(drifts)
}

/// What the catalog holds: each VM with its points, and the copies found
/// unreadable.
pub struct Contents {
    pub listed: Vec<(VmRecord, Vec<PointRecord>)>,
    /// Only when every VM is listed.
    pub unreadable: Vec<(PointRef, CopyRecord)>,
}

/// The catalog's contents, of every VM or of the one named.
pub fn contents(catalog: &Catalog, vm: Option<&str>) -> Result<Contents> {
    let vms: Vec<_> = catalog
        .vms()?
        .into_iter()
        .filter(|v| vm.is_none_or(|n| n == v.name))
        .collect();
    if let Some(name) = vm
        && vms.is_empty()
    {
        let known = catalog.vms()?;
        let known: Vec<&str> = known.iter().map(|v| v.name.as_str()).collect();
        bail!(
            "the catalog knows {}",
            crate::policy::diag::no_such("VM", name, &known)
        );
    }
    let mut listed = Vec::new();
    for v in vms {
        let points = catalog.points_of_vm(&v.uuid)?;
        listed.push((v, points));
    }
    let unreadable = if vm.is_none() {
        catalog.unreadable_copies()?
    } else {
        Vec::new()
    };
    Ok(Contents { listed, unreadable })
}
