//! A plan saved for review (`coffer plan --out FILE`) and carried out
//! later (`coffer apply FILE`). The file holds the plan's instant and
//! actions and a fingerprint of what it was made from (every policy file,
//! every copy in the catalog), sealed with a digest. Loading checks the
//! seal; `apply` then checks the fingerprint against a fresh gather and
//! carries out only the actions a fresh plan also holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::gather::Gathered;
use crate::plan::planner::{self, Plan};
use crate::policy::Config;

/// What a saved plan was made from: a digest of every policy file and of
/// the catalog's points and copies, with the lists to show what changed;
/// and a digest of the whole saved plan (its instant, its actions and
/// those lists), so an edit of the file is seen. The digest is no
/// signature (whoever can edit the file can compute it again): `apply
/// FILE` also plans afresh and carries out only what both plans contain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub policies: BTreeMap<String, String>,
    pub copies: BTreeSet<String>,
    /// SHA-256 of the plan's instant, actions, policies and copies; empty
    /// in a plan saved by an older coffer (which is refused).
    #[serde(default)]
    pub plan_sha256: String,
}

impl Fingerprint {
    /// The digest that seals a saved plan's instant and actions with what
    /// it was made from.
    pub fn seal(&self, now: DateTime<Utc>, actions: &[planner::Action]) -> Result<String> {
        use sha2::Digest;
        let bytes = serde_json::to_vec(&serde_json::json!({
            "now": now,
            "actions": actions,
            "policies": self.policies,
            "copies": self.copies,
        }))?;
        Ok(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// Whether the file's actions are the ones it was saved with.
    pub fn seals(&self, now: DateTime<Utc>, actions: &[planner::Action]) -> Result<bool> {
        Ok(!self.plan_sha256.is_empty() && self.seal(now, actions)? == self.plan_sha256)
    }

    pub fn of(config: &Config, g: &Gathered) -> Result<Fingerprint> {
        use sha2::Digest;
        let mut policies = BTreeMap::new();
        for file in crate::policy::load(&config.dir).files {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let rel = file
                .strip_prefix(&config.dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            policies.insert(rel, hex::encode(sha2::Sha256::digest(&bytes)));
        }
        let copies = g
            .points
            .iter()
            .flat_map(|p| p.copies.keys().map(move |t| format!("{}@{t}", p.point_id)))
            .collect();
        Ok(Fingerprint {
            policies,
            copies,
            plan_sha256: String::new(),
        })
    }

    /// What differs from `now`, in words; empty when nothing does.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (f, d) in &now.policies {
            match self.policies.get(f) {
                None => out.push(format!("policy file {f} was added")),
                Some(old) if old != d => out.push(format!("policy file {f} changed")),
                _ => {}
            }
        }
        for f in self.policies.keys() {
            if !now.policies.contains_key(f) {
                out.push(format!("policy file {f} was removed"));
            }
        }
        for c in now.copies.difference(&self.copies) {
            out.push(format!("catalog: copy {c} appeared"));
        }
        for c in self.copies.difference(&now.copies) {
            out.push(format!("catalog: copy {c} is gone"));
        }
        out
    }
}

/// A plan as `--out` saves it and `apply FILE` reads it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    pub now: DateTime<Utc>,
    pub fingerprint: Fingerprint,
    pub actions: Vec<planner::Action>,
}

/// Writes `plan` to `path`, sealed, with the fingerprint of what it was
/// made from.
pub fn save_plan(path: &Path, config: &Config, gathered: &Gathered, plan: &Plan) -> Result<()> {
    let mut fingerprint = Fingerprint::of(config, gathered)?;
    fingerprint.plan_sha256 = fingerprint.seal(plan.now, &plan.actions)?;
    let saved = SavedPlan {
        format: plan.format,
        now: plan.now,
        fingerprint,
        actions: plan.actions.clone(),
    };
    std::fs::write(path, serde_json::to_string_pretty(&saved)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a saved plan and checks its seal: refused when it is not a plan,
/// of another format, or changed after it was saved.
pub fn load_plan(file: &Path) -> Result<SavedPlan> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the plan {}", file.display()))?;
    let saved: SavedPlan = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a plan saved by `coffer plan --out`",
            file.display()
        )
    })?;
    if saved.format != planner::PLAN_FORMAT {
        anyhow::bail!(
            "plan format {} is not {}",
            saved.format,
            planner::PLAN_FORMAT
        );
    }
    if !saved.fingerprint.seals(saved.now, &saved.actions)? {
        anyhow::bail!(
            "refusing the plan in {}: it was changed after `coffer plan --out` saved it (its actions do not match its fingerprint), or an older coffer saved it; run `coffer plan --out {}` again and review it",
            file.display(),
            file.display()
        );
    }
    Ok(saved)
}
