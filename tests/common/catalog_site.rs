//! A policy directory with one local tier and a small image, on the
//! embedded SQLite catalog or on the test PostgreSQL server: what the
//! catalog's tests run against, once per backend.

use std::path::PathBuf;
use std::sync::Arc;

use coffer::catalog::{Catalog, Verification, VerificationKind};
use coffer::policy::model::CatalogLocation;
use coffer::repo::Repository;
use coffer::repo::local::LocalStore;
use serde_json::Value;

use super::{stderr, stdout};

/// Where a test keeps its catalog.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Each test, once per backend: `NAME::sqlite` and `NAME::postgres`.
#[allow(unused_macros)]
macro_rules! on_both {
    ($(fn $name:ident($b:ident: Backend) $body:block)*) => {$(
        mod $name {
            use super::*;
            fn run($b: Backend) $body
            #[test]
            fn sqlite() {
                run(Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                run(Backend::Postgres)
            }
        }
    )*};
}

#[allow(unused_imports)]
pub(crate) use on_both;

/// A policy directory with one local tier, its repository, and a small
/// image to back up.
pub struct Setup {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub policies: PathBuf,
    pub repo: PathBuf,
    pub state: PathBuf,
    pub image: PathBuf,
    pub catalog: CatalogLocation,
}

impl Setup {
    pub fn new(backend: Backend) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let policies = dir.join("policies");
        std::fs::create_dir(&policies).unwrap();
        let state = dir.join("state");
        let (catalog, settings) = match backend {
            Backend::Sqlite => (
                CatalogLocation::File(state.join("catalog.db")),
                String::new(),
            ),
            Backend::Postgres => {
                let at = super::postgres::location(&dir);
                let settings = super::postgres::settings(&at);
                (at, settings)
            }
        };
        std::fs::write(
            policies.join("coffer.toml"),
            format!(
                r#"
[settings]
timezone = "UTC"
{settings}

[sources.lab]
kind = "lab"

[tiers.local]
backend = "local"
path = "../repo"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#
            ),
        )
        .unwrap();
        let image = dir.join("disk.raw");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(2 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"coffer catalog test", 4096).unwrap();
        let s = Setup {
            repo: dir.join("repo"),
            state,
            catalog,
            _tmp: tmp,
            dir,
            policies,
            image,
        };
        s.ok(&["repo", "init", "--tier", "local"]);
        s
    }

    /// Runs `coffer ARGS -p POLICIES` and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        let p = self.policies.display().to_string();
        all.extend(["-p", &p]);
        let o = super::coffer_in(&self.dir, &all);
        assert!(
            o.status.success(),
            "coffer {all:?} failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Backs the image up as `vm`; returns the new point id.
    pub fn backup(&self, vm: &str) -> String {
        let img = self.image.display().to_string();
        let out = self.ok(&[
            "backup-image",
            &img,
            "--vm",
            vm,
            "--tier",
            "local",
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["point"].as_str().unwrap().to_string()
    }

    /// The arguments that name the catalog: `--state DIR` for the file,
    /// none for PostgreSQL (the policy names it).
    pub fn catalog_args(&self) -> Vec<String> {
        match &self.catalog {
            CatalogLocation::File(_) => vec!["--state".into(), self.state.display().to_string()],
            CatalogLocation::Postgres { .. } => Vec::new(),
        }
    }

    /// `coffer ARGS` with the catalog's arguments.
    pub fn ok_on_catalog(&self, args: &[&str]) -> String {
        let extra = self.catalog_args();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(extra.iter().map(String::as_str));
        self.ok(&all)
    }

    /// `catalog rebuild|refresh --json`: the drift of tier `local`.
    pub fn sync(&self, verb: &str) -> Value {
        let out = self.ok_on_catalog(&["catalog", verb, "--tier", "local", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["format"], coffer::json::FORMAT);
        assert_eq!(v["tiers"][0]["tier"], "local");
        v["tiers"][0].clone()
    }

    pub fn show(&self) -> Value {
        let mut v: Value =
            serde_json::from_str(&self.ok_on_catalog(&["catalog", "show", "--json"])).unwrap();
        // When it was printed differs from one call to the next.
        v.as_object_mut().unwrap().remove("generated");
        v
    }

    pub fn manifest(&self, point: &str) -> PathBuf {
        let points = self.repo.join("points");
        for vm in std::fs::read_dir(&points).unwrap() {
            let m = vm.unwrap().path().join(point).join("manifest.json");
            if m.exists() {
                return m;
            }
        }
        panic!("no manifest for {point}");
    }

    /// Runs one SQL statement on the catalog, whichever the backend.
    pub fn sql(&self, statement: &str) {
        match &self.catalog {
            CatalogLocation::File(file) => {
                rusqlite::Connection::open(file)
                    .unwrap()
                    .execute_batch(statement)
                    .unwrap();
            }
            CatalogLocation::Postgres { url, .. } => {
                super::postgres::connect(url)
                    .unwrap()
                    .batch_execute(statement)
                    .unwrap();
            }
        }
    }

    pub fn open_catalog(&self) -> Catalog {
        Catalog::open_at(&self.catalog).unwrap()
    }

    pub fn open_repo(&self) -> Repository {
        Repository::open(Arc::new(LocalStore::new(&self.repo).unwrap()), None).unwrap()
    }
}

/// A data verification of `point` on tier `local` that just ended.
pub fn verified(point: &str, data_ok: bool) -> Verification {
    Verification {
        kind: VerificationKind::Verify,
        point_id: point.into(),
        tier: "local".into(),
        drill: None,
        started: chrono::Utc::now(),
        finished: Some(chrono::Utc::now()),
        ok: Some(data_ok),
        detail: None,
        data_ok: Some(data_ok),
        guest_ok: None,
        guest_detail: None,
        restore_seconds: None,
        heartbeat_seconds: None,
        method: None,
    }
}
