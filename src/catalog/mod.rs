//! The catalog: coffer's record of what exists and what happened — VMs
//! seen, restore points and their disks, which tier holds a copy of which
//! point, verification and drill results, runs, their actions, and alerts.
//! It is an embedded SQLite database (WAL mode) under the state dir, or,
//! when `settings.catalog` is a `postgres://` URL, a PostgreSQL database
//! that several coffer processes share (`db.rs`: the same SQL and the same
//! numbered migrations on both).
//!
//! The repositories stay the source of truth for data: the catalog is
//! refreshed from them (listings and manifests only, never chunks) and can
//! be rebuilt from them at any time. A refresh reports drift — a copy that
//! vanished from a tier, a manifest the catalog never saw, a manifest that
//! cannot be read — and records it, so the next refresh reports only what
//! changed since. The catalog never decides anything; the planner reads it.

mod changes;
pub(crate) mod db;
mod journal;
mod query;
pub mod queue;
mod recoveries;
mod refresh;
pub mod schema;
pub mod tierlog;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;

use crate::policy::model::CatalogLocation;
use crate::repo::RepoError;
use db::Db;

pub use changes::{ChangeMark, PointsRead, PointsSince};
pub use journal::{SnapshotLifetimeRecord, Unfinished};
pub use query::{
    CopyRecord, CopyState, DiskRecord, DrillRun, PointRecord, TierRefresh, Verification,
    VerificationKind, VmRecord,
};
pub use recoveries::Recovery;
pub use refresh::{Drift, DriftItem, DriftKind};
pub use schema::SCHEMA_VERSION;

/// The catalog file inside a state dir.
pub const FILE_NAME: &str = "catalog.db";

/// How long a writer waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong in the catalog, by case.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog database (PostgreSQL): {}", pg_text(.0))]
    Postgres(#[from] postgres::Error),
    #[error("connecting to the PostgreSQL catalog {url}: {}", pg_text(.source))]
    Connect {
        url: String,
        source: postgres::Error,
    },
    #[error("the PostgreSQL catalog {url}: {message}")]
    PostgresSetup { url: String, message: String },
    #[error(
        "{what} needs a catalog every machine shares, and {location} is this machine's own: \
         set `catalog = \"postgres://…\"` in [settings]"
    )]
    NotShared { what: String, location: String },
    #[error("creating the catalog directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the catalog {path} has schema version {found}, newer than this coffer knows ({known}); \
         upgrade coffer, or rebuild a catalog for this version in another state dir with \
         `coffer catalog rebuild --tier NAME --state DIR`"
    )]
    NewerSchema {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("moving the damaged catalog {path} aside: {source}")]
    MoveAside {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog migration {version} failed: {source}")]
    Migration {
        version: u32,
        source: Box<CatalogError>,
    },
    #[error("listing tier `{tier}`: {source}")]
    Listing { tier: String, source: RepoError },
    #[error("reading the manifest of point {point} on tier `{tier}`: {source}")]
    Manifest {
        tier: String,
        point: String,
        source: RepoError,
    },
    #[error("the catalog holds a value it cannot read ({what}: `{value}`); rebuild it")]
    BadValue { what: &'static str, value: String },
}

impl CatalogError {
    /// The database file is not a database, or is corrupt: coffer moves it
    /// aside and rebuilds the catalog from the tiers (see `open_or_replace`).
    pub fn is_damaged(&self) -> bool {
        let code = match self {
            CatalogError::Sqlite(e) => e.sqlite_error_code(),
            CatalogError::Migration { source, .. } => return source.is_damaged(),
            _ => None,
        };
        matches!(
            code,
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        )
    }
}

/// What a PostgreSQL error says: the server's own message (with its
/// detail and hint) for an error the server sent, else the client's with
/// its causes. The client's `Display` alone says only "db error".
pub fn pg_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            out.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            out.push_str(&format!("; hint: {h}"));
        }
        return out;
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(&format!(": {text}"));
        }
        cause = c.source();
    }
    out
}

/// A damaged catalog that `open_or_replace` moved aside.
#[derive(Debug)]
pub struct MovedAside {
    /// Where the damaged file is now (`catalog.db.damaged-<time>`).
    pub path: PathBuf,
    /// Why it could not be opened.
    pub error: CatalogError,
}

/// An open catalog.
#[derive(Debug)]
pub struct Catalog {
    db: Db,
    /// Where it is: the SQLite file, or the PostgreSQL URL (which never
    /// holds a password).
    location: String,
}

/// How long coffer waits for a PostgreSQL server to accept a connection,
/// unless the URL says otherwise (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a catalog connection uses TLS, and the CA file that verifies
/// the server (`None`: the system's root store).
pub(crate) enum PostgresTls {
    Off,
    Verified(Option<PathBuf>),
}

/// A catalog URL as the client library parses it, and what it asks of TLS,
/// with libpq's parameter names so that administrators write what they
/// know. Both `validate` and the connection read a URL through this.
///
/// - `sslmode=require`, `verify-ca` or `verify-full`: TLS, and the server's
///   certificate is always verified, chain and host name (what libpq calls
///   `verify-full`): a catalog decides what is pruned, so coffer never
///   talks to a server it cannot authenticate.
/// - `sslrootcert=FILE`: the CA (PEM) that signed the server's certificate;
///   without it, the system's root store.
/// - `sslmode=disable`, `prefer`, or no `sslmode`: no TLS (loopback, or a
///   network the operator trusts); `sslrootcert` is then refused as
///   having no effect.
pub(crate) fn parse_postgres_url(url: &str) -> Result<(postgres::Config, PostgresTls), String> {
    let parse = |url: &str| {
        url.parse::<postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((parse(url)?, PostgresTls::Off));
    };
    let (mut kept, mut verify, mut ca) = (Vec::new(), false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", path)) if Path::new(path).is_absolute() => {
                ca = Some(PathBuf::from(path));
            }
            Some(("sslrootcert", path)) => {
                return Err(format!(
                    "sslrootcert=`{path}` is not an absolute path; name the CA file from /"
                ));
            }
            Some(("sslmode", "require" | "verify-ca" | "verify-full")) => {
                verify = true;
                kept.push("sslmode=require".to_string());
            }
            _ => kept.push(pair.to_string()),
        }
    }
    if ca.is_some() && !verify {
        return Err(
            "sslrootcert is given but sslmode does not ask for TLS; add sslmode=verify-full".into(),
        );
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let tls = if verify {
        PostgresTls::Verified(ca)
    } else {
        PostgresTls::Off
    };
    Ok((parse(&url)?, tls))
}

/// Connects to the PostgreSQL server of a `postgres://` catalog URL, with
/// the password read from its secret reference, over verified TLS when
/// the URL asks for it (see `parse_postgres_url`).
pub fn connect_postgres(
    url: &str,
    password: Option<&crate::policy::model::SecretRef>,
) -> Result<postgres::Client, CatalogError> {
    let setup = |message: String| CatalogError::PostgresSetup {
        url: url.to_string(),
        message,
    };
    let (mut config, tls) = parse_postgres_url(url).map_err(setup)?;
    if let Some(p) = password {
        config.password(p.read().map_err(setup)?);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("coffer");
    }
    let connected = match tls {
        PostgresTls::Verified(ca) => {
            let tls =
                crate::tls::trusting(ca.as_deref()).map_err(|e| setup(format!("TLS: {e}")))?;
            config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        }
        PostgresTls::Off => config.connect(postgres::NoTls),
    };
    connected.map_err(|source| CatalogError::Connect {
        url: url.to_string(),
        source,
    })
}

impl Catalog {
    /// Opens the catalog wherever the policy keeps it, creating and
    /// migrating it as [`Catalog::open`] does.
    pub fn open_at(location: &CatalogLocation) -> Result<Catalog, CatalogError> {
        match location {
            CatalogLocation::File(path) => Catalog::open(path),
            CatalogLocation::Postgres { url, password } => {
                let client = connect_postgres(url, password.as_ref())?;
                let mut db = Db::Postgres(RefCell::new(client));
                schema::migrate(&mut db, url)?;
                Ok(Catalog {
                    db,
                    location: url.clone(),
                })
            }
        }
    }

    /// [`Catalog::open_or_replace`] wherever the policy keeps the catalog.
    /// A PostgreSQL catalog is never moved aside: the server guards its own
    /// files, and a failure there is reported as it is.
    pub fn open_or_replace_at(
        location: &CatalogLocation,
    ) -> Result<(Catalog, Option<MovedAside>), CatalogError> {
        match location {
            CatalogLocation::File(path) => Catalog::open_or_replace(path),
            other => Ok((Catalog::open_at(other)?, None)),
        }
    }

    /// Opens the catalog at `path`, creating it (and its directory) when
    /// absent and migrating it to this build's schema.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers (a `plan`) never block the writer (an `apply`).
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        debug_assert!(mode.eq_ignore_ascii_case("wal") || mode.eq_ignore_ascii_case("memory"));
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut db = Db::Sqlite(conn);
        schema::migrate(&mut db, &path.display().to_string())?;
        Ok(Catalog {
            db,
            location: path.display().to_string(),
        })
    }

    /// Opens the catalog at `path`; when the file is damaged (not a
    /// database, corrupt), moves it aside (with its `-wal` and `-shm`) to
    /// `<path>.damaged-<time>` and opens a new, empty catalog in its place,
    /// for the caller to rebuild from the tiers and their logs.
    pub fn open_or_replace(path: &Path) -> Result<(Catalog, Option<MovedAside>), CatalogError> {
        let error = match Catalog::open(path) {
            Ok(c) => return Ok((c, None)),
            Err(e) if e.is_damaged() => e,
            Err(e) => return Err(e),
        };
        let suffix = format!(".damaged-{}", Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
        let with = |ext: &str| {
            let mut p = path.as_os_str().to_os_string();
            p.push(ext);
            PathBuf::from(p)
        };
        let aside = with(&suffix);
        std::fs::rename(path, &aside).map_err(|source| CatalogError::MoveAside {
            path: path.display().to_string(),
            source,
        })?;
        for ext in ["-wal", "-shm"] {
            let side = with(ext);
            if side.exists() {
                let _ = std::fs::rename(&side, with(&format!("{suffix}{ext}")));
            }
        }
        let catalog = Catalog::open(path)?;
        Ok((catalog, Some(MovedAside { path: aside, error })))
    }

    /// Where the catalog is: its file, or its PostgreSQL URL.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether the catalog is on a PostgreSQL server.
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        schema::version(&self.db)
    }
}

/// The catalog's text form of an instant: RFC 3339 UTC with microseconds,
/// fixed width so that text order is time order.
pub(crate) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(what: &'static str, s: &str) -> Result<DateTime<Utc>, CatalogError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| CatalogError::BadValue {
            what,
            value: s.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_that_is_not_a_database_is_moved_aside_and_replaced() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (catalog, moved) = Catalog::open_or_replace(&path).unwrap();
        let moved = moved.expect("the damaged file is moved aside");
        assert!(moved.error.is_damaged(), "{}", moved.error);
        assert_eq!(std::fs::read(&moved.path).unwrap(), vec![0x5a; 8192]);
        assert!(moved.path.to_string_lossy().contains("catalog.db.damaged-"));
        assert_eq!(catalog.schema_version().unwrap(), SCHEMA_VERSION);
        drop(catalog);
        // A sound catalog is opened as it is.
        let (_, moved) = Catalog::open_or_replace(&path).unwrap();
        assert!(moved.is_none());
    }
}
