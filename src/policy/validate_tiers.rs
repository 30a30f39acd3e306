//! Two tiers must be two repositories: one tier's retention would otherwise
//! prune the other's points, and compliance would count copies that do not
//! exist. Local tiers are compared by their canonical paths (as far as they
//! exist: `repo`, `./repo/` and a symlink to it are one directory), S3
//! tiers by endpoint, bucket and prefix, and Azure tiers by account
//! endpoint, container and prefix; a tier may not be another's
//! directory or prefix, nor lie inside one, nor be the policy directory or
//! inside the state directory. Opening the tiers checks the repository ids
//! as well (`engine::tiers::open_tiers`), for what a path cannot show (a
//! bind mount, two endpoints of one server).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::load::Merged;
use super::model::{Settings, Tier, TierBackend};
use super::validate::Resolver;

/// Where a tier's repository lives, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Dir(PathBuf),
    Bucket {
        endpoint: String,
        bucket: String,
        /// The prefix's segments, without empty ones.
        prefix: Vec<String>,
    },
    /// A tape tier's catalog directory (two tape tiers may share a drive
    /// or a library, as pools do, but not a media catalog).
    Catalog(PathBuf),
}

/// How two places relate.
enum Relation {
    Same,
    /// The first lies inside the second.
    Inside,
    /// The second lies inside the first.
    Contains,
}

fn relation(a: &Place, b: &Place) -> Option<Relation> {
    match (a, b) {
        (Place::Dir(a), Place::Dir(b)) => {
            if a == b {
                Some(Relation::Same)
            } else if a.starts_with(b) {
                Some(Relation::Inside)
            } else if b.starts_with(a) {
                Some(Relation::Contains)
            } else {
                None
            }
        }
        (
            Place::Bucket {
                endpoint: ea,
                bucket: ba,
                prefix: pa,
            },
            Place::Bucket {
                endpoint: eb,
                bucket: bb,
                prefix: pb,
            },
        ) if ea == eb && ba == bb => {
            if pa == pb {
                Some(Relation::Same)
            } else if pa.starts_with(pb) {
                Some(Relation::Inside)
            } else if pb.starts_with(pa) {
                Some(Relation::Contains)
            } else {
                None
            }
        }
        (Place::Catalog(a), Place::Catalog(b)) if a == b => Some(Relation::Same),
        _ => None,
    }
}

/// `path` absolute, without `.` and `..`, and with symlinks resolved in the
/// longest part of it that exists (a tier's directory may not exist yet).
pub(crate) fn canonical_dir(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut rest = Vec::new();
    let mut head = lexical.clone();
    loop {
        if let Ok(real) = head.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                head = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

fn place(tier: &Tier, state_dir: &Path) -> Place {
    match &tier.backend {
        TierBackend::Tape { catalog, .. } => {
            Place::Catalog(canonical_dir(&catalog.clone().unwrap_or_else(|| {
                crate::tape::tier::default_catalog(state_dir, &tier.name)
            })))
        }
        TierBackend::Local { path } => Place::Dir(canonical_dir(path)),
        TierBackend::S3 {
            bucket,
            prefix,
            endpoint,
            ..
        } => Place::Bucket {
            // No endpoint: AWS, by region; a bucket name is global there.
            endpoint: endpoint
                .as_deref()
                .unwrap_or("aws")
                .trim_end_matches('/')
                .to_ascii_lowercase(),
            bucket: bucket.clone(),
            prefix: prefix
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect(),
        },
        // The endpoint names the account (the public one in its host name,
        // Azurite's in its path).
        TierBackend::Azure {
            account,
            container,
            prefix,
            endpoint,
            ..
        } => Place::Bucket {
            endpoint: endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
                .trim_end_matches('/')
                .to_ascii_lowercase(),
            bucket: container.clone(),
            prefix: prefix
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect(),
        },
    }
}

impl Resolver<'_> {
    /// Refuses tiers that share storage, lie inside one another, or sit on
    /// the policy or state directory.
    pub(super) fn distinct_tier_storage(
        &mut self,
        dir: &Path,
        settings: &Settings,
        merged: &Merged,
        tiers: &BTreeMap<String, Tier>,
    ) {
        let policy_dir = canonical_dir(dir);
        let state_dir = canonical_dir(&settings.state_dir);
        let mut seen: Vec<(&str, String, Place)> = Vec::new();
        // In the order they are written: the later of two is the error.
        let mut ordered: Vec<_> = tiers
            .iter()
            .filter_map(|(name, tier)| merged.tiers.get(name).map(|e| (name, tier, e)))
            .collect();
        ordered.sort_by(|a, b| {
            (&a.2.file, a.2.name_span.start).cmp(&(&b.2.file, b.2.name_span.start))
        });
        for (name, tier, e) in ordered {
            let r = &e.value;
            // The key a user would change, and how it reads.
            let bucket = r.bucket.as_ref().map(|b| ("bucket", b));
            let (span, written) = match (
                &r.path,
                bucket.or(r.container.as_ref().map(|c| ("container", c))),
            ) {
                (Some(p), _) => (p.span(), format!("`{}`", p.get())),
                (None, Some((what, b))) => (
                    r.prefix.as_ref().map_or(b.span(), |p| p.span()),
                    format!(
                        "{what} `{}`{}",
                        b.get(),
                        r.prefix
                            .as_ref()
                            .map(|p| format!(" prefix `{}`", p.get()))
                            .unwrap_or_default()
                    ),
                ),
                (None, None) => (e.name_span.clone(), format!("tier `{name}`")),
            };
            let file = e.file.as_path();
            let here = place(tier, &settings.state_dir);
            if let Place::Dir(p) = &here {
                if *p == policy_dir {
                    self.err(
                        "tier-path",
                        file,
                        span.clone(),
                        format!("tier `{name}` ({written}) is the policy directory itself"),
                        format!("give the tier a directory of its own, e.g. `path = \"/srv/coffer/{name}\"`"),
                    );
                // A state directory at `/` is its own error (settings): every
                // path would be "inside" it.
                } else if state_dir.parent().is_some() && p.starts_with(&state_dir) {
                    self.err(
                        "tier-path",
                        file,
                        span.clone(),
                        format!("tier `{name}` ({written}) is inside the state directory"),
                        "the state directory holds the catalog and reports; put the tier outside it"
                            .into(),
                    );
                }
            }
            for (other, other_written, there) in &seen {
                let msg = match relation(&here, there) {
                    None => continue,
                    Some(Relation::Same) => format!(
                        "tier `{name}` ({written}) is the same storage as tier `{other}` ({other_written})"
                    ),
                    Some(Relation::Inside) => format!(
                        "tier `{name}` ({written}) lies inside tier `{other}` ({other_written})"
                    ),
                    Some(Relation::Contains) => format!(
                        "tier `{other}` ({other_written}) lies inside tier `{name}` ({written})"
                    ),
                };
                self.err(
                    "same-storage",
                    file,
                    span.clone(),
                    msg,
                    "each tier needs a repository of its own, or one tier's retention prunes the other's points".into(),
                );
            }
            seen.push((name, written, here));
        }
    }
}
