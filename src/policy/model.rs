//! The resolved policy: what the planner and runner consume. Every value is
//! typed and checked (durations, sizes, rates, schedules, time zones, globs);
//! secrets are still references, read only by the part that needs them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use globset::GlobMatcher;

use super::schedule::Schedule;
use super::units::{ByteSize, DailyWindow, Rate};

pub use super::raw::{BackendKind, LabMode, Media, SendWhen, SmtpSecurity, SourceKind};

/// The whole policy directory, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy directory; relative paths in it are relative to this.
    pub dir: PathBuf,
    pub settings: Settings,
    pub sources: BTreeMap<String, Source>,
    pub tiers: BTreeMap<String, Tier>,
    pub policies: BTreeMap<String, Policy>,
    pub compliance: Compliance,
    pub notify: BTreeMap<String, Notifier>,
}

impl Config {
    /// The source named `name`, or an error saying which one was likely
    /// meant.
    pub fn source_named(&self, name: &str) -> anyhow::Result<&Source> {
        self.sources.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            anyhow::anyhow!("{}", super::diag::no_such("source", name, &names))
        })
    }

    /// "no policy named `name`" and the likely one.
    pub fn no_such_policy(&self, name: &str) -> String {
        let names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        super::diag::no_such("policy", name, &names)
    }

    /// The retention policy `policy` keeps on `tier`, and the policy's time
    /// zone; else why there is none.
    pub fn retention_of(&self, policy: &str, tier: &str) -> Result<(Retention, Tz), String> {
        let p = (self.policies.get(policy)).ok_or_else(|| self.no_such_policy(policy))?;
        let rules = (p.retain.get(tier).cloned())
            .ok_or_else(|| format!("policy `{policy}` has no retention for tier `{tier}`"))?;
        Ok((rules, p.timezone()))
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub catalog: CatalogLocation,
    pub timezone: Tz,
    pub report_dir: PathBuf,
    /// Pinged at every run (start, success, failure).
    pub healthcheck_url: Option<String>,
    /// What reports and mail subjects call this installation.
    pub name: String,
}

/// Where the catalog is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLocation {
    /// The embedded SQLite file (the default, `<state_dir>/catalog.db`).
    File(PathBuf),
    /// A PostgreSQL database that several coffer processes share: its URL
    /// (which holds no password) and where the password is read from.
    Postgres {
        url: String,
        password: Option<SecretRef>,
    },
}

impl CatalogLocation {
    /// Whether this catalog exists yet: its file is there. A PostgreSQL
    /// catalog is always there to be opened (and migrated).
    pub fn exists(&self) -> bool {
        match self {
            CatalogLocation::File(p) => p.exists(),
            CatalogLocation::Postgres { .. } => true,
        }
    }
}

impl std::fmt::Display for CatalogLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::File(p) => write!(f, "{}", p.display()),
            CatalogLocation::Postgres { url, .. } => f.write_str(url),
        }
    }
}

/// Whether a `catalog` setting names a PostgreSQL server rather than a
/// file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The machine's host name ("coffer" when it has none).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "coffer".to_string(),
    }
}

/// Where a secret is read from when it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Reads the secret. The error says where it looked, never the value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))
            }
            SecretRef::File(path) => read_secret_file(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display())),
        }
    }
}

/// The largest secret file coffer reads: a password or a key is a few
/// hundred bytes, a certificate bundle a few KiB.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Reads a secret file: a regular file (never a device or a pipe, which
/// could be read forever) of at most `MAX_SECRET_FILE_BYTES`, as UTF-8.
fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Error, Read};
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::other(
            "not a regular file (a secret must be a small file, not a device or a pipe)",
        ));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(Error::other(format!(
            "larger than {} KiB; a secret file holds one password or key",
            MAX_SECRET_FILE_BYTES >> 10
        )));
    }
    Ok(text)
}

/// How the server certificate of a source is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's root certificates.
    SystemRoots,
    /// Exactly this certificate (SHA-256 of its DER encoding).
    Thumbprint([u8; 32]),
    /// Certificates signed by the CA in this PEM file.
    CaFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub tls: TlsTrust,
    pub site: Option<String>,
    pub datacenter: Option<String>,
    pub max_per_host: u32,
    pub max_per_datastore: u32,
    pub lab_vms: u32,
    /// What the lab answers as (lab sources only).
    pub lab_mode: LabMode,
    /// Datastore read requests in flight at once to one host.
    pub max_requests: u32,
    /// The largest datastore read request, in bytes.
    pub read_request: u64,
    /// Changed areas closer than this many bytes are read as one request.
    pub read_gap: u64,
}

#[derive(Debug, Clone)]
pub enum TierBackend {
    Local {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        access_key: Option<SecretRef>,
        secret_key: Option<SecretRef>,
        /// The storage class chunks are written in.
        storage_class: Option<String>,
    },
    Azure {
        account: String,
        container: String,
        prefix: String,
        /// The account's blob endpoint; Azure's public one when absent.
        endpoint: Option<String>,
        /// The account key, or a shared access signature.
        access_key: Option<SecretRef>,
        sas: Option<SecretRef>,
        /// The access tier chunks are written in.
        storage_class: Option<String>,
    },
    Tape {
        hardware: crate::tape::tier::Hardware,
        pool: String,
        /// The media catalog's directory; STATE_DIR/tape/TIER when absent.
        catalog: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub backend: TierBackend,
    pub media: Media,
    pub site: Option<String>,
    pub encryption_key: Option<SecretRef>,
    pub immutable_for: Option<Duration>,
    pub bandwidth: Option<Rate>,
    pub max_parallel: u32,
    /// Chunks go into packs of about this many bytes; `None`: one object
    /// per chunk.
    pub pack_size: Option<u64>,
    /// The share of a pack's bytes unreferenced before gc repacks it (0..1].
    pub repack_waste: f64,
    /// How a thaw from an archive class is asked for, and for how long.
    pub thaw_speed: crate::repo::store::ThawSpeed,
    pub thaw_days: u32,
    /// The medium leaves the library or host once written: copies here
    /// count as offline (3-2-1-1-0).
    pub offline: bool,
}

/// What the plan says of a drill or a copy that reads a tape tier.
pub const TAPE_NOTE: &str =
    "on tape: the point is first read off its media into a staging directory";

impl Tier {
    /// How long a read from this tier waits before its first byte: 0 at
    /// once, 1 a tape to load and stage from, 2 a thaw of hours.
    pub fn read_rank(&self) -> u8 {
        if self.archive_class().is_some() {
            2
        } else if self.is_tape() {
            1
        } else {
            0
        }
    }

    pub fn is_tape(&self) -> bool {
        matches!(self.backend, TierBackend::Tape { .. })
    }

    /// The archive class whose objects must be thawed before they are read
    /// (S3 `GLACIER` or `DEEP_ARCHIVE`, Azure `Archive`); `None` when reads
    /// work at once.
    pub fn archive_class(&self) -> Option<&str> {
        match &self.backend {
            TierBackend::S3 {
                storage_class: Some(c),
                ..
            } if c == "GLACIER" || c == "DEEP_ARCHIVE" => Some(c),
            TierBackend::Azure {
                storage_class: Some(c),
                ..
            } if c == "Archive" => Some(c),
            _ => None,
        }
    }

    /// What a thaw from this tier is: class, speed and the wait S3 states
    /// for it ("Understanding archive retrieval options", Amazon S3 user
    /// guide); `None` when the tier needs none.
    pub fn thaw_note(&self) -> Option<String> {
        use crate::repo::store::ThawSpeed::*;
        let class = self.archive_class()?;
        // Azure: "Blob rehydration from the archive tier" (standard priority
        // up to 15 hours, high priority under an hour below 10 GB).
        let wait = match (class, self.thaw_speed) {
            ("Archive", Expedited) => "under 1 hour",
            ("Archive", _) => "up to 15 hours",
            ("DEEP_ARCHIVE", Bulk) => "within 48 hours",
            ("DEEP_ARCHIVE", _) => "within 12 hours",
            (_, Expedited) => "1-5 minutes",
            (_, Standard) => "3-5 hours",
            (_, Bulk) => "5-12 hours",
        };
        Some(format!(
            "in {class}: a thaw ({} retrieval, typically {wait}) is asked for first",
            self.thaw_speed.name().to_lowercase()
        ))
    }
}

/// What a policy asks of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Application,
    ApplicationPreferred,
    Filesystem,
    Crash,
}

/// restic `forget` rules for one tier; all `None` never happens after
/// validation (a retention that keeps nothing is refused).
/// `coffer retention simulate` takes the same rules as options.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Retention {
    /// Keep the newest N points.
    #[arg(long)]
    pub last: Option<u32>,
    /// Keep the newest point of each of the last N hours.
    #[arg(long)]
    pub hourly: Option<u32>,
    /// Keep the newest point of each of the last N days.
    #[arg(long)]
    pub daily: Option<u32>,
    /// Keep the newest point of each of the last N weeks.
    #[arg(long)]
    pub weekly: Option<u32>,
    /// Keep the newest point of each of the last N months.
    #[arg(long)]
    pub monthly: Option<u32>,
    /// Keep the newest point of each of the last N years.
    #[arg(long)]
    pub yearly: Option<u32>,
    /// Keep everything within this long of the newest point, e.g. 14d.
    #[arg(long, value_parser = super::units::parse_duration)]
    pub within: Option<Duration>,
}

/// A compiled glob together with the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub matcher: GlobMatcher,
}

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }
    /// A pattern with no glob metacharacters names exactly one thing.
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{'])
    }
}

/// The facts about a VM that selection looks at.
#[derive(Debug, Clone, Default)]
pub struct VmFacts<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub folder: &'a str,
    pub tags: &'a [String],
    pub datastores: &'a [String],
}

/// Which VMs a policy takes: those named by `vms`, `tags` or `folders`
/// (any of them), restricted to `sources` and `datastores` when given,
/// minus `exclude`.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub sources: Option<Vec<String>>,
    pub vms: Vec<Pattern>,
    pub tags: Vec<String>,
    pub folders: Vec<Pattern>,
    pub datastores: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
}

impl Selector {
    pub fn matches(&self, vm: &VmFacts<'_>) -> bool {
        if let Some(sources) = &self.sources
            && !sources.iter().any(|s| s == vm.source)
        {
            return false;
        }
        let included = self.vms.iter().any(|p| p.is_match(vm.name))
            || self.tags.iter().any(|t| vm.tags.contains(t))
            || self.folders.iter().any(|p| p.is_match(vm.folder));
        let on_datastore = self.datastores.is_empty()
            || vm
                .datastores
                .iter()
                .any(|d| self.datastores.iter().any(|p| p.is_match(d)));
        included && on_datastore && !self.exclude.iter().any(|p| p.is_match(vm.name))
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub selector: Selector,
    pub schedule: Schedule,
    pub rpo: Option<Duration>,
    pub consistency: Consistency,
    pub full_every: Option<Duration>,
    pub io_limit: Option<Rate>,
    /// A backup's snapshot open longer than this stops the read, is removed
    /// and fails the backup (a delta grows while it is open and slows the VM
    /// as it is merged back; VMware KB 1025279).
    pub max_snapshot_lifetime: Option<Duration>,
    pub window: Option<DailyWindow>,
    pub chunk_size: ByteSize,
    /// The tier backups are written to.
    pub backup_to: String,
    /// Retention per tier; every tier here holds points of this policy.
    pub retain: BTreeMap<String, Retention>,
    pub drills: Vec<Drill>,
}

impl Policy {
    pub fn timezone(&self) -> Tz {
        self.schedule.tz
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillKind {
    Verify,
    Restore,
    Boot,
}

/// How a boot drill brings the VM up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillMethod {
    /// Restored onto the drill host's datastore, then booted.
    Restore,
    /// Booted from the repository over NFS, served on `listen` (the
    /// address the host reaches; `None`: 127.0.0.1, for a lab host).
    Instant { listen: Option<std::net::IpAddr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Tcp {
        port: u16,
        timeout: Duration,
    },
    Heartbeat {
        timeout: Duration,
    },
    Script {
        path: String,
        timeout: Duration,
    },
    /// A command run inside the guest through VMware Tools (guest
    /// operations), with the drill's guest credentials; exit 0 passes.
    Guest {
        command: String,
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Drill {
    pub name: String,
    pub kind: DrillKind,
    /// How a boot drill brings the VM up.
    pub method: DrillMethod,
    pub every: Duration,
    pub tier: String,
    pub host: Option<String>,
    /// On a vCenter drill host: the ESXi host the drill VM runs on.
    pub esx_host: Option<String>,
    /// On a vCenter drill host: the VM folder (a path below the
    /// datacenter's VM folder) and resource pool (a path below the host's
    /// root pool) of the drill VM.
    pub folder: Option<String>,
    pub resource_pool: Option<String>,
    /// The drill host's datastore for a restored drill VM.
    pub datastore: Option<String>,
    pub network: Option<String>,
    pub fsck: Option<String>,
    pub timeout: Duration,
    pub checks: Vec<Check>,
    /// The guest account `guest` checks (and in-guest TCP checks) run as.
    pub guest_user: Option<String>,
    pub guest_password: Option<SecretRef>,
}

/// The 3-2-1-1-0 rule and hygiene limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compliance {
    pub copies: u32,
    pub media: u32,
    pub offsite: u32,
    pub immutable: u32,
    pub verify_errors: u32,
    pub snapshot_max_age: Duration,
    pub drill_max_age: Duration,
}

impl Default for Compliance {
    fn default() -> Self {
        Compliance {
            copies: 3,
            media: 2,
            offsite: 1,
            immutable: 1,
            verify_errors: 0,
            snapshot_max_age: Duration::from_secs(24 * 3600),
            drill_max_age: Duration::from_secs(30 * 86_400),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Notifier {
    pub name: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub security: SmtpSecurity,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub from: String,
    pub to: Vec<String>,
    pub send: Vec<SendWhen>,
    pub compliance_schedule: Option<Schedule>,
    /// CA certificate (PEM) of a relay with a private CA, besides the system roots.
    pub ca_file: Option<PathBuf>,
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_secret_file_that_is_a_device_or_too_big_is_refused_without_reading_it_all() {
        let e = SecretRef::File("/dev/zero".into()).read().unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'x'; (MAX_SECRET_FILE_BYTES + 1) as usize]).unwrap();
        let e = SecretRef::File(big).read().unwrap_err();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        let ok = t.path().join("ok");
        std::fs::write(&ok, "hunter2\n").unwrap();
        assert_eq!(SecretRef::File(ok).read().unwrap(), "hunter2");
    }
}

#[cfg(test)]
mod lookup_tests {
    #[test]
    fn a_retention_is_found_by_policy_and_tier_or_refused_with_why() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
        let loaded = crate::policy::load(std::path::Path::new(dir));
        assert_eq!(loaded.error_count(), 0);
        let config = loaded.config.unwrap();
        let (rules, _) = config.retention_of("gold", "fast-a").unwrap();
        assert_eq!((rules.hourly, rules.daily), (Some(24), Some(14)));
        let e = config.retention_of("gold", "nowhere").unwrap_err();
        assert_eq!(e, "policy `gold` has no retention for tier `nowhere`");
        let e = config.retention_of("golden", "fast-a").unwrap_err();
        assert!(e.contains("golden"), "{e}");
    }

    #[test]
    fn errors_are_counted_apart_from_warnings() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("p.toml"), "[policies.x\n").unwrap();
        let loaded = crate::policy::load(t.path());
        assert!(loaded.error_count() >= 1);
        assert!(loaded.config.is_none());
    }
}
