//! A workspace: one policy directory opened for work, with its config, its
//! catalog and the observer that hears about everything done through it.
//! Each operation of a run is a method: `refresh` (gather), `plan`,
//! `save_plan`, `apply`, `compliance`, `compliance_report`, `sync_tiers`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::apply::{ApplyOptions, RunOutcome};
use super::gather::{Gathered, gather, make_plan};
use super::observer::Observer;
use crate::catalog::{Catalog, Drift};
use crate::plan::planner::Plan;
use crate::policy::Config;
use crate::report::mail::Mail;

/// A policy directory that does not load; `diagnostics` are its problems,
/// rendered with file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("the policy directory {} is invalid:\n{diagnostics}", dir.display())]
pub struct InvalidPolicies {
    pub dir: PathBuf,
    pub diagnostics: String,
}

pub struct Workspace<'o> {
    pub config: Config,
    pub catalog_at: crate::policy::model::CatalogLocation,
    pub catalog: Catalog,
    observer: &'o dyn Observer,
}

impl<'o> Workspace<'o> {
    /// Loads the policy directory `dir` and opens its workspace.
    pub fn load(dir: &Path, state: Option<&Path>, observer: &'o dyn Observer) -> Result<Self> {
        let loaded = crate::policy::load(dir);
        match loaded.config {
            Some(config) => Self::open(config, state, observer),
            None => Err(InvalidPolicies {
                dir: dir.to_path_buf(),
                diagnostics: loaded.render(),
            }
            .into()),
        }
    }

    /// Opens the catalog of `config` (in `state` when given). A damaged
    /// catalog is moved aside and rebuilt from the tiers.
    pub fn open(config: Config, state: Option<&Path>, observer: &'o dyn Observer) -> Result<Self> {
        let catalog_at = super::catalog::catalog_location(state, &config);
        let catalog = super::catalog::open_catalog(&catalog_at, Some(&config), observer)?;
        Ok(Workspace {
            config,
            catalog_at,
            catalog,
            observer,
        })
    }

    /// Opens the workspace for a run: every secret must be readable and
    /// every tier must hold a repository, or nothing starts.
    pub fn open_for_run(
        config: Config,
        state: Option<&Path>,
        observer: &'o dyn Observer,
    ) -> Result<Self> {
        super::tiers::check_secrets(&config)?;
        super::tiers::refuse_uninitialised_tiers(&config)?;
        Self::open(config, state, observer)
    }

    pub fn observer(&self) -> &'o dyn Observer {
        self.observer
    }

    /// Refreshes the catalog from every tier and reads every source.
    pub fn refresh(&mut self) -> Result<Gathered> {
        gather(&self.config, &mut self.catalog)
    }

    /// Plans from what was gathered, as of `now`.
    pub fn plan(&self, gathered: &Gathered, now: DateTime<Utc>, allow_mass_prune: bool) -> Plan {
        make_plan(&self.config, gathered, now, allow_mass_prune)
    }

    /// Saves `plan` for `apply` to carry out later.
    pub fn save_plan(&self, path: &Path, gathered: &Gathered, plan: &Plan) -> Result<()> {
        super::saved_plan::save_plan(path, &self.config, gathered, plan)
    }

    /// Carries out a run; `clock` is the planning clock.
    pub fn apply(
        &mut self,
        options: &ApplyOptions,
        clock: &dyn Fn() -> DateTime<Utc>,
    ) -> Result<RunOutcome> {
        super::apply::apply(
            &self.config,
            &mut self.catalog,
            options,
            clock,
            self.observer,
        )
    }

    /// Each VM's standing now: a fresh gather and the plan made from it
    /// (its `compliance`).
    pub fn compliance(&mut self, now: DateTime<Utc>) -> Result<(Gathered, Plan)> {
        let gathered = self.refresh()?;
        let plan = self.plan(&gathered, now, false);
        Ok((gathered, plan))
    }

    /// The compliance report from a fresh gather: rendered, written under
    /// the report directory, and mailed when `send` (through every
    /// notifier, or the one named).
    pub fn compliance_report(&mut self, send: bool, only: Option<&str>) -> Result<Mail> {
        let gathered = self.refresh()?;
        super::report::send_compliance(&self.config, &gathered, send, only, self.observer)
    }

    /// Refreshes (or rebuilds) the catalog from the named tiers.
    pub fn sync_tiers(&mut self, tiers: &[String], rebuild: bool) -> Result<Vec<Drift>> {
        super::catalog::sync_tiers(&self.config, &mut self.catalog, tiers, rebuild)
    }
}
