//! A store in an Azure Blob Storage container through `object_store`'s
//! Azure client, which brings Shared Key and SAS authorization and its
//! retries with back-off. Every object is one block blob written by one
//! Put Blob, so an interrupted write leaves nothing behind and `flush` has
//! nothing to do.
//!
//! Immutable tiers use Azure's version-level immutability (WORM until a
//! date; "Configure immutability policies for blob versions" in the Azure
//! Storage docs): the container must have version-level immutability
//! support, which implies blob versioning. Each blob is written with a
//! **locked** time-based policy until its date (`x-ms-immutability-policy-
//! until-date` and `-mode` on Put Blob, REST API version 2020-06-12 and
//! later): a locked policy can be extended but never shortened or removed,
//! the counterpart of S3 Object Lock's compliance mode. With versioning, a
//! plain Delete Blob only turns the current version into a previous one
//! and frees nothing, so a delete removes every version by id; the service
//! refuses a version still under its policy (409
//! `BlobImmutableDueToPolicy`), which is reported as `Locked`. These
//! requests are built here and signed with `object_store`'s own
//! authorizer.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::azure::{AzureAuthorizer, MicrosoftAzure, MicrosoftAzureBuilder, split_sas};
use object_store::client::{
    Certificate, ClientOptions, HttpClient, HttpConnector, HttpRequest, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};

use super::rest::{self, Retry, between, percent};
use super::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed};

/// The REST API version of the requests built here: the first with blob
/// version immutability on Put Blob and on container properties.
const API_VERSION: &str = "2021-12-02";

/// Where a container is and how to talk to it.
#[derive(Debug, Clone)]
pub struct AzureLocation {
    pub account: String,
    pub container: String,
    /// Blob name prefix inside the container ("" for the whole container).
    pub prefix: String,
    /// The blob service endpoint; `https://ACCOUNT.blob.core.windows.net`
    /// when absent. A path-style endpoint (Azurite, Azure Stack) names the
    /// account in its path: `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// The account's access key (Shared Key authorization).
    pub access_key: Option<String>,
    /// A shared access signature (`sv=…&sig=…`), instead of the key.
    pub sas: Option<String>,
    /// Extra CA certificate (PEM) for an endpoint with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Write every blob under a locked immutability policy for this long.
    pub immutable_for: Option<Duration>,
    /// The access tier blobs holding chunk data are written in (`Hot`,
    /// `Cool`, `Cold`, `Archive`); `None`: the account's default.
    pub access_tier: Option<String>,
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// Time limit for one request.
    pub request_timeout: Duration,
}

impl AzureLocation {
    /// A location with the defaults for everything but account and
    /// container.
    pub fn new(account: impl Into<String>, container: impl Into<String>) -> Self {
        AzureLocation {
            account: account.into(),
            container: container.into(),
            prefix: String::new(),
            endpoint: None,
            access_key: None,
            sas: None,
            ca_file: None,
            immutable_for: None,
            access_tier: None,
            max_retries: 6,
            retry_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
        }
    }

    /// Reads `azure://ACCOUNT/CONTAINER[/PREFIX]`.
    pub fn from_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("azure://")?;
        let (account, rest) = rest.split_once('/')?;
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if account.is_empty() || container.is_empty() {
            return None;
        }
        let mut loc = AzureLocation::new(account, container);
        loc.prefix = prefix.trim_matches('/').to_string();
        Some(loc)
    }

    /// The account's endpoint, without a trailing slash.
    fn service(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{}.blob.core.windows.net", self.account),
        }
    }

    fn container_url(&self) -> String {
        format!("{}/{}", self.service(), percent(&self.container))
    }
}

/// Whether a container name is one Azure accepts: 3 to 63 lowercase
/// letters, digits and single hyphens, starting and ending with a letter
/// or digit ("Naming and Referencing Containers, Blobs, and Metadata").
pub fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

pub struct AzureStore {
    rt: tokio::runtime::Runtime,
    az: MicrosoftAzure,
    http: HttpClient,
    loc: AzureLocation,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AzureStore {
    /// Connects (lazily: the first request shows whether the container is
    /// there). An immutable tier checks at once that the container has
    /// version-level immutability support, without which the service
    /// refuses the policies (or, worse, a server that ignores them would
    /// leave the blobs deletable).
    pub fn new(loc: AzureLocation) -> Result<Self, StoreError> {
        let mut options = ClientOptions::new()
            .with_timeout(loc.request_timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(loc.service().starts_with("http://"));
        if let Some(ca) = &loc.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| StoreError::from_io("read CA file", &ca.display().to_string(), e))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| StoreError::Backend(format!("CA file {}: {e}", ca.display())))?;
            options = options.with_root_certificate(cert);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: loc.max_retries,
            retry_timeout: loc.retry_timeout,
        };
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&loc.account)
            .with_container_name(&loc.container)
            .with_endpoint(loc.service())
            .with_client_options(options.clone())
            .with_retry(retry);
        if let Some(key) = &loc.access_key {
            builder = builder.with_access_key(key);
        }
        if let Some(sas) = &loc.sas {
            let pairs = split_sas(sas)
                .map_err(|e| StoreError::Backend(format!("the SAS of {}: {e}", describe(&loc))))?;
            builder = builder.with_sas_authorization(pairs);
        }
        let az = builder
            .build()
            .map_err(|e| StoreError::Backend(format!("{}: {e}", describe(&loc))))?;
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| StoreError::Backend(format!("Azure client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the Azure client: {e}")))?;
        let store = AzureStore { rt, az, http, loc };
        if store.loc.immutable_for.is_some() {
            store.check_immutability_support()?;
        }
        Ok(store)
    }

    /// Creates the container (Create Container), for a test or a setup
    /// script; a container that exists already is fine.
    pub fn create_container(&self) -> Result<(), StoreError> {
        let url = format!("{}?restype=container", self.loc.container_url());
        let (status, _, body) = self
            .signed(http::Method::PUT, &url, &[], Bytes::new())
            .map_err(StoreError::Backend)?;
        if status.is_success() || status.as_u16() == 409 {
            return Ok(());
        }
        Err(self.status_error("create container", "", status, &body))
    }

    fn path(&self, key: &str) -> ObjectPath {
        rest::object_path(&self.loc.prefix, key)
    }

    fn url(&self, key: &str) -> String {
        let full = self.path(key);
        let encoded: Vec<String> = full.as_ref().split('/').map(percent).collect();
        format!("{}/{}", self.loc.container_url(), encoded.join("/"))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn key_desc(&self, key: &str) -> String {
        format!(
            "azure://{}/{}/{}",
            self.loc.account,
            self.loc.container,
            self.path(key)
        )
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        let text = e.to_string();
        if text.contains("ContainerNotFound") {
            return self.no_container();
        }
        if text.contains("BlobArchived") {
            return StoreError::Archived {
                key: key.to_string(),
                class: "Archive".into(),
            };
        }
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
            _ if text.contains("403") || text.contains("AuthorizationFailure") => {
                StoreError::PermissionDenied {
                    key: format!("{} ({text})", self.key_desc(key)),
                }
            }
            _ => StoreError::Backend(format!("{op} {}: {text}", self.key_desc(key))),
        }
    }

    fn no_container(&self) -> StoreError {
        StoreError::Backend(format!(
            "container `{}` does not exist in account `{}` at {} (ContainerNotFound); create it first{}",
            self.loc.container,
            self.loc.account,
            self.loc.service(),
            if self.loc.immutable_for.is_some() {
                ", with version-level immutability support"
            } else {
                ""
            }
        ))
    }

    /// Sends a request `object_store` has no call for, signed with the
    /// store's credential (Shared Key, or the SAS in the query), retrying
    /// transient failures.
    fn signed(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<rest::Answer, String> {
        let retry = Retry {
            max_retries: self.loc.max_retries,
            retry_timeout: self.loc.retry_timeout,
            request_timeout: self.loc.request_timeout,
        };
        self.block_on(async {
            let credential = self
                .az
                .credentials()
                .get_credential()
                .await
                .map_err(|e| format!("Azure credentials: {e}"))?;
            rest::send(&self.http, retry, || {
                let mut req = http::Request::builder()
                    .method(method.clone())
                    .uri(url)
                    .header("x-ms-version", API_VERSION)
                    .header("content-length", body.len().to_string());
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                let mut req: HttpRequest = req
                    .body(body.clone().into())
                    .map_err(|e| format!("building request: {e}"))?;
                AzureAuthorizer::new(&credential, &self.loc.account)
                    .try_authorize(&mut req)
                    .map_err(|e| format!("signing request: {e}"))?;
                Ok(req)
            })
            .await
        })
    }

    fn status_error(
        &self,
        op: &'static str,
        key: &str,
        status: http::StatusCode,
        body: &[u8],
    ) -> StoreError {
        let text = String::from_utf8_lossy(body);
        let code = between(&text, "<Code>", "</Code>").unwrap_or("");
        let message = between(&text, "<Message>", "</Message>")
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("");
        match (status.as_u16(), code) {
            (_, "ContainerNotFound") => self.no_container(),
            (404, _) => StoreError::NotFound(key.to_string()),
            (403, _) => StoreError::PermissionDenied {
                key: format!("{} ({code}: {message})", self.key_desc(key)),
            },
            (s, _) => StoreError::Backend(format!(
                "{op} {}: HTTP {s} {code} {message}",
                self.key_desc(key)
            )),
        }
    }

    /// Refuses an immutable tier whose container cannot hold version-level
    /// immutability policies (Get Container Properties:
    /// `x-ms-immutable-storage-with-versioning-enabled`).
    fn check_immutability_support(&self) -> Result<(), StoreError> {
        let url = format!("{}?restype=container", self.loc.container_url());
        let (status, headers, body) = self
            .signed(http::Method::GET, &url, &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("{}: {e}", self.describe())))?;
        if !status.is_success() {
            return Err(self.status_error("read the properties of", "", status, &body));
        }
        let enabled = headers
            .get("x-ms-immutable-storage-with-versioning-enabled")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if enabled {
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "container `{}` of account `{}` has no version-level immutability support, but the tier is \
             immutable; enable it on the container (or create the container in an account that has it) \
             so that every blob can carry a locked immutability policy",
            self.loc.container, self.loc.account
        )))
    }

    /// The access tier the blob at `key` is written in: the tier's, for
    /// blobs holding chunk data only (`chunk::archivable`).
    fn tier_for(&self, key: &str) -> Option<&str> {
        self.loc
            .access_tier
            .as_deref()
            .filter(|_| super::chunk::archivable(key))
    }

    /// Put Blob with a locked immutability policy until `now + keep`.
    fn put_immutable(&self, key: &str, data: &[u8], keep: Duration) -> Result<(), StoreError> {
        let mut headers = immutable_put_headers(SystemTime::now(), keep).to_vec();
        if let Some(tier) = self.tier_for(key) {
            headers.push(("x-ms-access-tier", tier.to_string()));
        }
        let (status, _, body) = self
            .signed(
                http::Method::PUT,
                &self.url(key),
                &headers,
                Bytes::copy_from_slice(data),
            )
            .map_err(|e| StoreError::Backend(format!("write {}: {e}", self.key_desc(key))))?;
        if status.is_success() {
            return Ok(());
        }
        Err(self.status_error("write", key, status, &body))
    }

    /// Deletes every version of a blob on an immutable tier; a version
    /// still under its policy is reported as `Locked` with its date (the
    /// service decides, coffer only reports).
    fn delete_versions(&self, key: &str) -> Result<(), StoreError> {
        let full = self.path(key);
        let url = format!(
            "{}?restype=container&comp=list&include=versions,immutabilitypolicy&prefix={}",
            self.loc.container_url(),
            percent(full.as_ref())
        );
        let (status, _, body) = self
            .signed(http::Method::GET, &url, &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("list versions of {key}: {e}")))?;
        if !status.is_success() {
            return Err(self.status_error("list versions of", key, status, &body));
        }
        let text = String::from_utf8_lossy(&body);
        for (version, until) in blob_versions(&text, full.as_ref()) {
            let url = format!("{}?versionid={}", self.url(key), percent(&version));
            let (status, _, body) = self
                .signed(http::Method::DELETE, &url, &[], Bytes::new())
                .map_err(|e| StoreError::Backend(format!("delete {key}: {e}")))?;
            if status.is_success() || status.as_u16() == 404 {
                continue;
            }
            let answer = String::from_utf8_lossy(&body);
            if status.as_u16() == 409 && answer.contains("BlobImmutable") {
                return Err(StoreError::Locked {
                    key: key.to_string(),
                    until,
                });
            }
            return Err(self.status_error("delete", key, status, &body));
        }
        Ok(())
    }
}

/// The headers of a Put Blob that locks the blob until `now + keep`: the
/// date in RFC 1123 form, as the Blob service takes every date.
fn immutable_put_headers(now: SystemTime, keep: Duration) -> [(&'static str, String); 3] {
    let until = now.checked_add(keep).unwrap_or(now);
    [
        ("x-ms-blob-type", "BlockBlob".to_string()),
        (
            "x-ms-immutability-policy-until-date",
            httpdate::fmt_http_date(until),
        ),
        ("x-ms-immutability-policy-mode", "Locked".to_string()),
    ]
}

/// The versions of blob `name` in a List Blobs answer, each with the date
/// its immutability policy runs to, when it has one.
fn blob_versions(xml: &str, name: &str) -> Vec<(String, Option<String>)> {
    xml.split("<Blob>")
        .skip(1)
        .filter(|b| between(b, "<Name>", "</Name>") == Some(name))
        .filter_map(|b| {
            let version = between(b, "<VersionId>", "</VersionId>")?;
            let until = between(
                b,
                "<ImmutabilityPolicyUntilDate>",
                "</ImmutabilityPolicyUntilDate>",
            );
            Some((version.to_string(), until.map(str::to_string)))
        })
        .collect()
}

/// Where a blob stands from its properties: `None` when it is in Archive
/// and no rehydration is under way (one must be asked for).
fn rehydration(tier: Option<&str>, archive_status: Option<&str>) -> Option<Thaw> {
    if archive_status.is_some_and(|s| s.starts_with("rehydrate-pending")) {
        return Some(Thaw::Pending);
    }
    match tier {
        Some(t) if t.eq_ignore_ascii_case("Archive") => None,
        _ => Some(Thaw::Ready),
    }
}

fn describe(loc: &AzureLocation) -> String {
    let at = match &loc.endpoint {
        Some(e) => format!(" at {e}"),
        None => String::new(),
    };
    format!(
        "azure://{}/{}/{}{at}",
        loc.account, loc.container, loc.prefix
    )
}

impl Store for AzureStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        super::store::check_key(key)?;
        // Lock objects are rewritten and deleted by design: never locked.
        if let Some(keep) = self.loc.immutable_for
            && !key.starts_with(super::lock::LOCKS_PREFIX)
        {
            return self.put_immutable(key, data, keep);
        }
        let payload = Bytes::copy_from_slice(data);
        let mut opts = object_store::PutOptions::default();
        if let Some(tier) = self.tier_for(key) {
            opts.attributes.insert(
                object_store::Attribute::StorageClass,
                tier.to_string().into(),
            );
        }
        self.block_on(self.az.put_opts(&self.path(key), payload.into(), opts))
            .map(drop)
            .map_err(|e| self.err("write", key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        super::store::check_key(key)?;
        self.block_on(async {
            let r = self.az.get(&self.path(key)).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| self.err("read", key, e))
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        super::store::check_key(key)?;
        let want = range.end - range.start;
        let got = self
            .block_on(self.az.get_range(&self.path(key), range))
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))?;
        rest::whole_range(key, got, want)
    }

    fn immutable_for(&self) -> Option<std::time::Duration> {
        self.loc.immutable_for
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        super::store::check_prefix(prefix)?;
        let at = self.describe();
        self.block_on(rest::list_under(
            &self.az,
            &self.loc.prefix,
            prefix,
            (&at, "remove that blob with an Azure client"),
            |e| self.err("list", prefix, e),
        ))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        super::store::check_key(key)?;
        if self.loc.immutable_for.is_some() && !key.starts_with(super::lock::LOCKS_PREFIX) {
            return self.delete_versions(key);
        }
        match self.block_on(self.az.delete(&self.path(key))) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Blobs are written in the account's default access tier, which
    /// reads at once.
    /// Rehydrates a blob in the Archive tier (Set Blob Tier to Cool, with
    /// High priority for an expedited thaw, Standard otherwise; "Blob
    /// rehydration from the archive tier" in the Azure Storage docs). Unlike
    /// an S3 restore this moves the blob out of Archive for good (`days`
    /// does not apply): a lifecycle management rule moves it back.
    fn thaw(&self, key: &str, _days: u32, speed: ThawSpeed) -> Result<Thaw, StoreError> {
        super::store::check_key(key)?;
        let (status, headers, body) = self
            .signed(http::Method::HEAD, &self.url(key), &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("read {}: {e}", self.key_desc(key))))?;
        if !status.is_success() {
            return Err(self.status_error("read", key, status, &body));
        }
        let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        if let Some(state) = rehydration(get("x-ms-access-tier"), get("x-ms-archive-status")) {
            return Ok(state);
        }
        let priority = match speed {
            ThawSpeed::Expedited => "High",
            ThawSpeed::Standard | ThawSpeed::Bulk => "Standard",
        };
        let url = format!("{}?comp=tier", self.url(key));
        let set = [
            ("x-ms-access-tier", "Cool".to_string()),
            ("x-ms-rehydrate-priority", priority.to_string()),
        ];
        let (status, _, body) = self
            .signed(http::Method::PUT, &url, &set, Bytes::new())
            .map_err(|e| StoreError::Backend(format!("rehydrate {}: {e}", self.key_desc(key))))?;
        if status.is_success() {
            return Ok(Thaw::Requested);
        }
        Err(self.status_error("rehydrate", key, status, &body))
    }

    fn describe(&self) -> String {
        describe(&self.loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_properties_tell_archived_from_rehydrating_from_online() {
        assert_eq!(rehydration(Some("Archive"), None), None);
        assert_eq!(
            rehydration(Some("Archive"), Some("rehydrate-pending-to-cool")),
            Some(Thaw::Pending)
        );
        assert_eq!(rehydration(Some("Cool"), None), Some(Thaw::Ready));
        assert_eq!(rehydration(None, None), Some(Thaw::Ready));
    }

    #[test]
    fn urls_and_container_names() {
        let loc = AzureLocation::from_url("azure://acct/backups/site-a/").unwrap();
        assert_eq!(
            (
                loc.account.as_str(),
                loc.container.as_str(),
                loc.prefix.as_str()
            ),
            ("acct", "backups", "site-a")
        );
        assert_eq!(
            loc.container_url(),
            "https://acct.blob.core.windows.net/backups"
        );
        assert!(AzureLocation::from_url("azure://acct").is_none());
        assert!(AzureLocation::from_url("azure:///c").is_none());
        assert!(AzureLocation::from_url("s3://b").is_none());
        for ok in ["abc", "coffer-offsite-1", "a1b"] {
            assert!(valid_container(ok), "{ok}");
        }
        for bad in ["ab", "Upper", "-lead", "trail-", "dou--ble", "under_score"] {
            assert!(!valid_container(bad), "{bad}");
        }
    }

    #[test]
    fn an_immutable_put_locks_the_blob_until_its_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = immutable_put_headers(now, Duration::from_secs(86_400));
        assert_eq!(headers[0], ("x-ms-blob-type", "BlockBlob".into()));
        assert_eq!(
            headers[1],
            (
                "x-ms-immutability-policy-until-date",
                "Wed, 15 Nov 2023 22:13:20 GMT".into()
            )
        );
        assert_eq!(
            headers[2],
            ("x-ms-immutability-policy-mode", "Locked".into())
        );
    }

    #[test]
    fn every_version_of_the_blob_is_found_with_its_date() {
        let xml = "<EnumerationResults><Blobs>\
            <Blob><Name>chunks/ab</Name><VersionId>2026-01-01T00:00:00.0000000Z</VersionId>\
            <Properties><ImmutabilityPolicyUntilDate>Fri, 01 Jan 2027 00:00:00 GMT</ImmutabilityPolicyUntilDate></Properties></Blob>\
            <Blob><Name>chunks/ab</Name><VersionId>2026-02-01T00:00:00.0000000Z</VersionId><Properties/></Blob>\
            <Blob><Name>chunks/abc</Name><VersionId>v3</VersionId></Blob>\
            </Blobs></EnumerationResults>";
        assert_eq!(
            blob_versions(xml, "chunks/ab"),
            [
                (
                    "2026-01-01T00:00:00.0000000Z".to_string(),
                    Some("Fri, 01 Jan 2027 00:00:00 GMT".to_string())
                ),
                ("2026-02-01T00:00:00.0000000Z".to_string(), None),
            ]
        );
    }
}
