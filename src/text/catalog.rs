//! The catalog for people: the drift a rebuild or refresh found, and the
//! points it holds per VM with where their copies are.

use std::fmt::Write as _;

use super::kind_word;
use crate::catalog::{CopyState, Drift, DriftKind, PointRecord};
use crate::engine::catalog::Contents;

/// `catalog rebuild` and `catalog refresh`: per tier, what was listed and
/// how it differs from what the catalog knew; then where the catalog is.
pub fn catalog_synced(
    drifts: &[Drift],
    rebuild: bool,
    catalog: &crate::policy::model::CatalogLocation,
) -> String {
    let mut out = String::new();
    for d in drifts {
        let _ = writeln!(
            out,
            "tier `{}`: {} points listed; {} never seen, {} appeared, {} missing, {} corrupt",
            d.tier,
            d.listed,
            d.never_seen().len(),
            d.appeared().len(),
            d.missing().len(),
            d.corrupt().len()
        );
        // After a rebuild every point is new to the tier: only problems
        // are worth a line each.
        for item in d.items.iter().filter(|i| {
            !rebuild || matches!(i.kind, DriftKind::Missing | DriftKind::Corrupt { .. })
        }) {
            let _ = writeln!(out, "  {item}");
        }
    }
    let _ = writeln!(out, "catalog: {catalog}");
    out
}

/// `catalog show`: each VM with its points and their copies, then the
/// copies whose manifest could not be read.
pub fn catalog_contents(c: &Contents) -> String {
    let mut out = String::new();
    for (vm, points) in &c.listed {
        let _ = writeln!(out, "{} ({}): {} points", vm.name, vm.uuid, points.len());
        for p in points {
            let _ = writeln!(
                out,
                "  {:<26} {:<20} {:<11} {}",
                p.point_id,
                p.created.format("%Y-%m-%d %H:%M:%SZ"),
                kind_word(p.kind),
                copies_text(p)
            );
        }
    }
    for (p, copy) in &c.unreadable {
        let _ = writeln!(
            out,
            "unreadable: point {} of VM {} on tier `{}`: {}",
            p.point_id,
            p.vm_uuid,
            copy.tier,
            copy.detail.as_deref().unwrap_or(copy.state.as_str())
        );
    }
    out
}

/// `local, offsite (missing)`: where the copies are.
fn copies_text(p: &PointRecord) -> String {
    if p.copies.is_empty() {
        return "no copies".into();
    }
    p.copies
        .iter()
        .map(|c| match c.state {
            CopyState::Present => c.tier.clone(),
            state => format!("{} ({})", c.tier, state.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
