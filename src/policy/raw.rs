//! What the operator typed, and nothing more: serde types that mirror the TOML
//! of a policy file one to one, with spans kept on every value a later check
//! may need to point at. Nothing here is interpreted — durations, sizes, cron
//! expressions and time zones stay text until `model` resolves them — so the
//! JSON Schema generated from these types describes exactly what a file may
//! contain.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// A value with the byte range it came from in its file.
#[derive(Debug, Clone)]
pub struct Sp<T>(pub toml::Spanned<T>);

impl<T> Sp<T> {
    pub fn get(&self) -> &T {
        self.0.get_ref()
    }
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Spanned::<T>::deserialize(d).map(Sp)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// Strings with a syntax of their own: kept as text here, with the pattern in
/// the schema so editors flag a typo before `coffer validate` does.
macro_rules! text_type {
    ($name:ident, $description:literal, $pattern:literal) => {
        #[doc = $description]
        #[derive(Debug, Clone, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $description })
            }
        }
    };
}

text_type!(
    DurationText,
    "A duration: numbers with units s, m, h, d, w, y, e.g. \"4h\", \"14d\", \"1h30m\".",
    r"^([0-9]+(s|m|h|d|w|y))+$"
);
text_type!(
    SizeText,
    "A size: a number and B, KiB, MiB, GiB, TiB, kB, MB, GB or TB, e.g. \"4MiB\".",
    r"^[0-9]+ ?(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)$"
);
text_type!(
    PackSizeText,
    "A pack size (\"16MiB\") or \"off\" for one object per chunk.",
    r"^(off|[0-9]+ ?(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB))$"
);
text_type!(
    RateText,
    "A rate: a size per second, e.g. \"100MiB/s\".",
    r"^[0-9]+ ?(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)/s$"
);
text_type!(
    CronText,
    "A cron expression (5 or 6 fields, seconds first when 6) or a nickname such as \"@daily\".",
    r"^(@[a-z]+|\S+( \S+){4,5})$"
);
text_type!(
    TimeZoneText,
    "An IANA time zone name, e.g. \"Europe/Berlin\" or \"UTC\".",
    r"^[A-Za-z_+-]+(/[A-Za-z0-9_+-]+)*$"
);
text_type!(
    WindowText,
    "A daily window \"HH:MM-HH:MM\" in the policy time zone; may cross midnight.",
    r"^[0-9]{1,2}:[0-9]{2}-[0-9]{1,2}:[0-9]{2}$"
);

/// Where a secret comes from. A literal secret in a policy file is refused:
/// policy files live in git.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum RawSecretRef {
    /// Read from an environment variable.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// Read from a file (the whole file, trailing newline removed).
    File {
        /// Path of the file holding the secret.
        file: String,
    },
}

/// A secret reference as written. Kept as a plain TOML value so that a
/// literal password reaches validation and gets a hint instead of a terse
/// type error; the schema still shows the accepted forms.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub toml::Value);

impl JsonSchema for SecretValue {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        RawSecretRef::json_schema(generator)
    }
}

/// One policy file. Every file of a policy directory has this shape; all of
/// them are merged.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "coffer policy file")]
pub struct RawFile {
    /// Where coffer keeps its own state. At most one file may hold it.
    pub settings: Option<RawSettings>,
    /// ESXi hosts, vCenters and the built-in lab to back up from.
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    /// Storage tiers: where restore points are kept.
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    /// Backup policies: which VMs, how often, where, how long, which drills.
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    /// The rules every VM is held to. At most one file may hold it.
    pub compliance: Option<RawCompliance>,
    /// Where reports are mailed.
    #[serde(default)]
    pub notify: BTreeMap<String, RawNotify>,
}

/// `[settings]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// State directory (catalog, journal, reports), relative to the policy directory. Default ".coffer".
    pub state_dir: Option<Sp<String>>,
    /// Catalog location: a path to the embedded SQLite file (default "<state_dir>/catalog.db"), or a PostgreSQL URL "postgres://USER@HOST:PORT/DATABASE" that several coffer processes share. The URL holds no password: give it in `catalog_password`.
    pub catalog: Option<Sp<String>>,
    /// The password of a PostgreSQL catalog's user, as a secret reference.
    pub catalog_password: Option<Sp<SecretValue>>,
    /// Default time zone for schedules and retention buckets. Default "UTC".
    pub timezone: Option<Sp<TimeZoneText>>,
    /// Where reports are written. Default "<state_dir>/reports".
    pub report_dir: Option<Sp<String>>,
    /// What reports and mail subjects call this installation, e.g.
    /// "site-a". Default: the machine's host name.
    pub name: Option<Sp<String>>,
    /// Pinged at every run, healthchecks.io style: URL/start when it
    /// starts, URL when it succeeds, URL/fail when an action failed or it
    /// was cancelled. E.g. "https://hc-ping.com/<uuid>".
    pub healthcheck_url: Option<Sp<String>>,
}

/// The kind of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A standalone ESXi host.
    Esxi,
    /// A vCenter Server.
    Vcenter,
    /// The built-in ESXi simulator (runs in-process on loopback).
    Lab,
}

/// What the built-in lab answers as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LabMode {
    /// A standalone ESXi host.
    #[default]
    Esxi,
    /// A vCenter with two datacenters and an ESXi host in each.
    Vcenter,
}

/// `[sources.NAME]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// "esxi", "vcenter" or "lab".
    pub kind: Sp<SourceKind>,
    /// https URL of the host or vCenter, e.g. "https://esxi01.example.com". Not used by the lab.
    pub url: Option<Sp<String>>,
    /// User name, e.g. "backup@vsphere.local".
    pub user: Option<Sp<String>>,
    /// Password reference: { env = "NAME" } or { file = "/path" }.
    pub password: Option<Sp<SecretValue>>,
    /// Pin the server certificate: "sha256:" followed by 64 hex digits (colons allowed).
    pub thumbprint: Option<Sp<String>>,
    /// PEM file with the CA that signed the server certificate.
    pub ca_file: Option<Sp<String>>,
    /// Site the source's VMs run at; a tier at another site counts as offsite.
    pub site: Option<Sp<String>>,
    /// Datacenter to use when the server has several.
    pub datacenter: Option<Sp<String>>,
    /// Backups running at once against one host. Default 2.
    pub max_per_host: Option<Sp<u32>>,
    /// Snapshots open at once on one datastore. Default 4.
    pub max_per_datastore: Option<Sp<u32>>,
    /// Number of VMs the lab creates (lab only). Default 3.
    pub lab_vms: Option<Sp<u32>>,
    /// What the lab answers as (lab only): "esxi" (default) or "vcenter" (two datacenters, a host in each, VMs spread over them).
    pub lab_mode: Option<Sp<LabMode>>,
    /// Datastore read requests in flight at once to one host; halved while the host answers 503 (busy), grown again on success. Default 4.
    pub max_requests: Option<Sp<u32>>,
    /// The largest datastore read request, from 256KiB to 64MiB. Default "16MiB".
    pub read_request: Option<Sp<SizeText>>,
    /// Changed areas closer than this are read as one request (the bytes between are read too), up to 4MiB. Default "64KiB".
    pub read_gap: Option<Sp<SizeText>>,
}

/// Storage backend of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A directory on a local or mounted file system.
    Local,
    /// An S3-compatible object store (AWS, MinIO, Ceph RGW, …).
    S3,
    /// A container of an Azure Blob Storage account.
    Azure,
    /// A media pool on a tape drive (with or without a changer); receives
    /// copies of points, never backups straight from hosts.
    Tape,
}

/// The medium a tier's copies live on (for the "2 media" of 3-2-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    Disk,
    Object,
    Tape,
}

/// `[tiers.NAME]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    /// "local", "s3", "azure" or "tape".
    pub backend: Sp<BackendKind>,
    /// Directory of a local tier (relative paths are relative to the policy directory).
    pub path: Option<Sp<String>>,
    /// Bucket of an s3 tier.
    pub bucket: Option<Sp<String>>,
    /// Storage account of an azure tier.
    pub account: Option<Sp<String>>,
    /// Container of an azure tier.
    pub container: Option<Sp<String>>,
    /// Key (blob name) prefix inside the bucket or container.
    pub prefix: Option<Sp<String>>,
    /// Endpoint URL of an S3-compatible server, e.g. "https://minio.example.com:9000"; of an azure tier, the account's blob endpoint when it is not "https://ACCOUNT.blob.core.windows.net" (Azurite: "http://127.0.0.1:10000/devstoreaccount1").
    pub endpoint: Option<Sp<String>>,
    /// Storage class the chunks of an s3 tier are written in: "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER" or "DEEP_ARCHIVE"; access tier of an azure tier's chunks: "Hot", "Cool", "Cold" or "Archive" (manifests and indexes stay in the default class). GLACIER, DEEP_ARCHIVE and Archive are thawed before a restore, a drill or a copy reads them. Default: the bucket's or account's default.
    pub storage_class: Option<Sp<String>>,
    /// Region of an s3 tier. Default "us-east-1".
    pub region: Option<Sp<String>>,
    /// Access key id of an s3 tier, or the account key of an azure tier: { env = "NAME" } or { file = "/path" }.
    pub access_key: Option<Sp<SecretValue>>,
    /// Shared access signature of an azure tier (instead of the account key): { env = "NAME" } or { file = "/path" }.
    pub sas: Option<Sp<SecretValue>>,
    /// Secret access key reference: { env = "NAME" } or { file = "/path" }.
    pub secret_key: Option<Sp<SecretValue>>,
    /// Medium: "disk", "object" or "tape". Default: "disk" for local, "object" for s3 and azure.
    pub media: Option<Sp<Media>>,
    /// Site the tier lives at; a site other than the source's counts as offsite.
    pub site: Option<Sp<String>>,
    /// Encryption key reference (passphrase or key file): { env = "NAME" } or { file = "/path" }.
    pub encryption_key: Option<Sp<SecretValue>>,
    /// Keep every object immutable for this long after it is written (S3 Object Lock in compliance mode; Azure version-level immutability with a locked policy).
    pub immutable_for: Option<Sp<DurationText>>,
    /// Bandwidth limit for writes to this tier, e.g. "200MiB/s".
    pub bandwidth: Option<Sp<RateText>>,
    /// Transfers to this tier running at once. Default 4.
    pub max_parallel: Option<Sp<u32>>,
    /// Chunks are stored many to an object ("pack") of about this size, or "off" for one object per chunk. Default "16MiB" for s3 and azure tiers (a request per pack instead of per chunk), "off" for local tiers. Applies when the repository is created; `coffer repo migrate` moves an existing one to packs.
    pub pack_size: Option<Sp<PackSizeText>>,
    /// gc rewrites a pack once this percentage of its bytes is no longer referenced (1 to 100). Default 25.
    pub repack_waste: Option<Sp<u32>>,
    /// How fast a thaw from an archive class (GLACIER, DEEP_ARCHIVE) is asked for before a drill or a copy reads the tier: "expedited", "standard" or "bulk". Default "standard".
    pub thaw_speed: Option<Sp<crate::repo::store::ThawSpeed>>,
    /// How many days thawed copies stay readable. Default 7.
    pub thaw_days: Option<Sp<u32>>,
    /// Tape drive of a tape tier, through the Linux st driver: the non-rewinding device, e.g. "/dev/nst0".
    pub device: Option<Sp<String>>,
    /// SCSI generic device of the tape library's media changer, e.g. "/dev/sg4" (optional: without one, the operator loads the medium coffer names).
    pub changer: Option<Sp<String>>,
    /// Which of the changer's drives `device` is, counted from 0. Default 0.
    pub changer_drive: Option<Sp<u32>>,
    /// Instead of `device`: a tape library emulated in this directory (slot-NN/ and drive/ holding cartridge files), for trying coffer and for tests.
    pub library: Option<Sp<String>>,
    /// Media pool of a tape tier: the labels of media coffer labels itself start with it. Default: the tier's name in upper case.
    pub pool: Option<Sp<String>>,
    /// Directory of a tape tier's media catalog, manifests and indexes. Default: STATE_DIR/tape/TIER.
    pub catalog: Option<Sp<String>>,
    /// The medium leaves the library or host after it is written (tapes sent offsite, rotated disks): copies on this tier count as offline for 3-2-1-1-0 (`[compliance] immutable`). Default false.
    pub offline: Option<Sp<bool>>,
}

/// Consistency a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsistencyText {
    /// Quiesce with VMware Tools and require the guest's VSS writers to take
    /// part (the host stores a VSS manifest with the snapshot); the backup
    /// fails when quiescing fails or gives only file-system consistency.
    Application,
    /// Quiesce; application consistency when the guest's VSS writers take
    /// part, else file-system consistency with an alert; when quiescing
    /// fails, fall back to a crash-consistent snapshot, and say so.
    ApplicationPreferred,
    /// Quiesce (file systems flushed and frozen, VSS writers when the guest
    /// has them); the backup fails when quiescing fails.
    Filesystem,
    /// Never quiesce.
    Crash,
}

/// `retain = { … }`: restic `forget` rules, ORed.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetain {
    /// Keep the newest N points.
    pub last: Option<Sp<u32>>,
    /// Keep the newest point of each of the last N hours that have points.
    pub hourly: Option<Sp<u32>>,
    /// Keep the newest point of each of the last N days that have points.
    pub daily: Option<Sp<u32>>,
    /// Keep the newest point of each of the last N ISO weeks that have points.
    pub weekly: Option<Sp<u32>>,
    /// Keep the newest point of each of the last N months that have points.
    pub monthly: Option<Sp<u32>>,
    /// Keep the newest point of each of the last N years that have points.
    pub yearly: Option<Sp<u32>>,
    /// Keep every point younger than this, measured from the newest point.
    pub within: Option<Sp<DurationText>>,
}

/// `[policies.NAME]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Free text shown in plans and reports.
    pub description: Option<Sp<String>>,
    /// Sources to select VMs from. Default: all sources.
    pub sources: Option<Sp<Vec<Sp<String>>>>,
    /// VM names or globs to include, e.g. ["db-*", "erp01"].
    pub vms: Option<Sp<Vec<Sp<String>>>>,
    /// vSphere tags; a VM carrying any of them is included.
    pub tags: Option<Sp<Vec<Sp<String>>>>,
    /// Inventory folder globs, e.g. ["/Prod/**"].
    pub folders: Option<Sp<Vec<Sp<String>>>>,
    /// Only VMs with a disk on one of these datastores (globs).
    pub datastores: Option<Sp<Vec<Sp<String>>>>,
    /// VM names or globs to leave out.
    pub exclude: Option<Sp<Vec<Sp<String>>>>,
    /// When backups are due: cron, e.g. "0 30 2 * * *" (with seconds) or "30 2 * * *".
    pub schedule: Sp<CronText>,
    /// Time zone of the schedule and of retention buckets. Default: settings.timezone.
    pub timezone: Option<Sp<TimeZoneText>>,
    /// Recovery point objective: the newest good point may never be older than this.
    pub rpo: Option<Sp<DurationText>>,
    /// "application", "application-preferred", "filesystem" or "crash". Default "crash".
    pub consistency: Option<Sp<ConsistencyText>>,
    /// Force a full backup when the newest full is older than this.
    pub full_every: Option<Sp<DurationText>>,
    /// Read limit against the hosts, shared by all of the policy's backups one coffer process runs at once (each worker process has its own), e.g. "200MiB/s".
    pub io_limit: Option<Sp<RateText>>,
    /// The longest a backup's snapshot may stay open, e.g. "2h": past it the
    /// read stops, the snapshot is removed and the backup fails. Default: no
    /// limit but the run's --action-timeout.
    pub max_snapshot_lifetime: Option<Sp<DurationText>>,
    /// Backups start only inside this daily window.
    pub window: Option<Sp<WindowText>>,
    /// Chunk size of the repository for these VMs: a power of two from 64KiB to 4MiB.
    pub chunk_size: Option<Sp<SizeText>>,
    /// The tier backups are written to; the other tiers in `retain` receive copies.
    pub backup_to: Sp<String>,
    /// Retention per tier: `[policies.NAME.retain.TIER]`. Every tier named here holds copies.
    pub retain: Sp<BTreeMap<String, Sp<RawRetain>>>,
    /// Verification drills.
    #[serde(default)]
    pub drills: Vec<Sp<RawDrill>>,
}

/// Kind of drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillKindText {
    /// Re-read every chunk of a point and check its digest.
    Verify,
    /// Restore to a scratch location and check the result end to end.
    Restore,
    /// Restore to a drill host, boot in isolation and run checks.
    Boot,
}

/// How a boot drill brings the VM up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillMethodText {
    /// Restore the point onto the drill host's datastore, then boot it.
    Restore,
    /// Boot it straight from the repository: coffer serves the point over
    /// NFS v3 and the host mounts it (instant recovery).
    Instant,
}

/// `[[policies.NAME.drills]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    /// Unique name of the drill. Default "<policy>-<kind>".
    pub name: Option<Sp<String>>,
    /// "verify", "restore" or "boot".
    pub kind: Sp<DrillKindText>,
    /// How often the drill is due, e.g. "7d".
    pub every: Sp<DurationText>,
    /// Tier to drill from. Default: the policy's backup_to.
    pub tier: Option<Sp<String>>,
    /// Source that hosts boot drills (boot only).
    pub host: Option<Sp<String>>,
    /// When `host` is a vCenter: the ESXi host the drill VM runs on, by name or managed object id (boot only). Default: the vCenter's only host.
    pub esx_host: Option<Sp<String>>,
    /// When `host` is a vCenter: the VM folder of the drill VM, a path below the datacenter's VM folder such as "drills" or "apps/drills", or a managed object id (boot only). Default: the datacenter's VM folder.
    pub folder: Option<Sp<String>>,
    /// The resource pool of the drill VM, a path below the drill host's root pool such as "drills", or a managed object id (boot only), so that drills run within the pool's limits. Default: the root pool.
    pub resource_pool: Option<Sp<String>>,
    /// Datastore of the drill host for the drill VM's files (boot drills with method "restore"). Default "datastore1".
    pub datastore: Option<Sp<String>>,
    /// Network boot drills connect to (boot only): "isolated" (the default) for a switch without uplink that coffer builds and removes, or an existing port group on a switch without uplink.
    pub network: Option<Sp<String>>,
    /// How a boot drill brings the VM up: "restore" (the default) or "instant" (booted from the repository over NFS, no copy).
    pub method: Option<Sp<DrillMethodText>>,
    /// The address of this machine the drill host reaches for NFS, ports 111 and 2049 (instant boot drills; default 127.0.0.1 for a lab host).
    pub listen: Option<Sp<String>>,
    /// Command run on each partition of a restored disk that holds a known file system (or on the whole image): "{image}", "{partition}", "{offset}", "{size}", "{fstype}" are replaced (restore only), e.g. "e2fsck -fn '{image}?offset={offset}'".
    pub fsck: Option<Sp<String>>,
    /// Limit for the whole drill. Default "1h".
    pub timeout: Option<Sp<DurationText>>,
    /// Guest account for `guest` checks (boot only), e.g. "root".
    pub guest_user: Option<Sp<String>>,
    /// Its password: { env = "NAME" } or { file = "/path" } (boot only).
    pub guest_password: Option<Sp<SecretValue>>,
    /// Checks run once the VM is up (boot only).
    #[serde(default)]
    pub checks: Vec<Sp<RawCheck>>,
}

/// One check of a boot drill: exactly one of `tcp`, `heartbeat`, `script`, `guest`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// A TCP port that must accept connections.
    pub tcp: Option<Sp<u16>>,
    /// VMware Tools must report a heartbeat.
    pub heartbeat: Option<Sp<bool>>,
    /// A script run with the VM's address and name; exit 0 passes.
    pub script: Option<Sp<String>>,
    /// A command run inside the guest through VMware Tools, as the drill's
    /// guest_user (e.g. "systemctl is-active postgresql"); exit 0 passes.
    pub guest: Option<Sp<String>>,
    /// Limit for this check. Default "5m".
    pub timeout: Option<Sp<DurationText>>,
}

/// `[compliance]`: the 3-2-1-1-0 rule and hygiene limits.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCompliance {
    /// Copies of each VM's data, production included. Default 3.
    pub copies: Option<Sp<u32>>,
    /// Distinct media among the copies. Default 2.
    pub media: Option<Sp<u32>>,
    /// Copies at a site other than the source's. Default 1.
    pub offsite: Option<Sp<u32>>,
    /// Immutable (or offline) copies. Default 1.
    pub immutable: Option<Sp<u32>>,
    /// Verification errors allowed in the newest verification. Default 0.
    pub verify_errors: Option<Sp<u32>>,
    /// Snapshots older than this are reported. Default "24h".
    pub snapshot_max_age: Option<Sp<DurationText>>,
    /// A VM whose last successful drill is older than this is in breach. Default "30d".
    pub drill_max_age: Option<Sp<DurationText>>,
}

/// How the connection to the SMTP relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587). The default.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// When a notifier sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SendWhen {
    /// After every run.
    Always,
    /// After a run with a failed action.
    OnFailure,
    /// When a compliance rule is breached.
    OnBreach,
}

/// `[notify.NAME]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// SMTP relay host name.
    pub smtp_host: Sp<String>,
    /// SMTP port. Default: 587 for starttls, 465 for tls, 25 for none.
    pub smtp_port: Option<Sp<u16>>,
    /// "starttls" (default), "tls" or "none".
    pub security: Option<Sp<SmtpSecurity>>,
    /// SMTP user name.
    pub user: Option<Sp<String>>,
    /// SMTP password reference: { env = "NAME" } or { file = "/path" }.
    pub password: Option<Sp<SecretValue>>,
    /// Sender address.
    pub from: Sp<String>,
    /// Recipient addresses.
    pub to: Sp<Vec<Sp<String>>>,
    /// When to send run reports. Default ["on-failure", "on-breach"].
    pub send: Option<Sp<Vec<Sp<SendWhen>>>>,
    /// Cron schedule of the compliance report, e.g. "0 0 8 * * MON".
    pub compliance_schedule: Option<Sp<CronText>>,
    /// Time zone of compliance_schedule. Default: settings.timezone.
    pub timezone: Option<Sp<TimeZoneText>>,
    /// CA certificate (PEM) of a relay with a private CA, relative to the
    /// policy directory; trusted besides the system roots.
    pub ca_file: Option<Sp<String>>,
}
