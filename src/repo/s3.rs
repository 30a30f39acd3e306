//! A store in an S3-compatible bucket (AWS, MinIO, Ceph RGW, …) through the
//! `object_store` crate, which also brings its retries with back-off on
//! 5xx, 429 and timeouts. Every object is one PUT, so an interrupted write
//! leaves nothing behind and `flush` has nothing to do.
//!
//! Immutable tiers (S3 Object Lock) need two requests `object_store` does
//! not speak: a PUT carrying the lock headers, and a DELETE of one object
//! version (a plain DELETE on a locked bucket only adds a delete marker and
//! frees nothing). Those two are signed with `object_store`'s own SigV4
//! authorizer and sent over its HTTP client, with the same TLS settings.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{
    Certificate, ClientOptions, HttpClient, HttpConnector, HttpRequest, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};

use super::rest::{self, Retry, between, percent};
use super::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed};

/// S3 Object Lock mode. Compliance: nobody, not even the bucket owner, can
/// delete before the date. Governance: principals with
/// `s3:BypassGovernanceRetention` can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Compliance,
    Governance,
}

impl LockMode {
    fn header(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// Where a bucket is and how to talk to it.
#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix inside the bucket ("" for the whole bucket).
    pub prefix: String,
    /// Endpoint URL of an S3-compatible server; AWS when absent.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; when absent, the usual AWS environment variables
    /// and instance metadata are used.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Extra CA certificate (PEM) for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Lock every object written for this long (immutable tiers).
    pub lock: Option<(LockMode, Duration)>,
    /// The storage class chunks are written in (`GLACIER`, …); the
    /// bucket's default when absent. Manifests, indexes and locks stay in
    /// the default class, so listing and planning never wait for a thaw.
    pub storage_class: Option<String>,
    /// How often a failing request is retried, and for how long at most.
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// Time limit for one request.
    pub request_timeout: Duration,
}

impl S3Location {
    /// A location with the defaults for everything but the bucket.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Location {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key: None,
            secret_key: None,
            ca_file: None,
            lock: None,
            storage_class: None,
            max_retries: 6,
            retry_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
        }
    }

    /// Reads `s3://bucket/prefix`.
    pub fn from_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let mut loc = S3Location::new(bucket);
        loc.prefix = prefix.trim_matches('/').to_string();
        Some(loc)
    }

    fn base_url(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{}/{}", e.trim_end_matches('/'), self.bucket),
            None => format!("https://s3.{}.amazonaws.com/{}", self.region, self.bucket),
        }
    }
}

pub struct S3Store {
    rt: tokio::runtime::Runtime,
    s3: AmazonS3,
    http: HttpClient,
    loc: S3Location,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl S3Store {
    /// Connects (lazily: the first request shows whether the bucket is
    /// there). An immutable tier checks at once that the bucket has Object
    /// Lock enabled, because locks cannot be added to a bucket later.
    pub fn new(loc: S3Location) -> Result<Self, StoreError> {
        let mut options = ClientOptions::new()
            .with_timeout(loc.request_timeout)
            .with_connect_timeout(Duration::from_secs(10));
        if let Some(endpoint) = &loc.endpoint {
            options = options.with_allow_http(endpoint.starts_with("http://"));
        }
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
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&loc.bucket)
            .with_region(&loc.region)
            .with_client_options(options.clone())
            .with_retry(retry);
        if let Some(endpoint) = &loc.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(k), Some(s)) = (&loc.access_key, &loc.secret_key) {
            builder = builder.with_access_key_id(k).with_secret_access_key(s);
        }
        let s3 = builder
            .build()
            .map_err(|e| StoreError::Backend(format!("S3 bucket `{}`: {e}", loc.bucket)))?;
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| StoreError::Backend(format!("S3 client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the S3 client: {e}")))?;
        let store = S3Store { rt, s3, http, loc };
        if store.loc.lock.is_some() {
            store.check_lock_enabled()?;
        }
        Ok(store)
    }

    fn path(&self, key: &str) -> ObjectPath {
        rest::object_path(&self.loc.prefix, key)
    }

    fn url(&self, key: &str) -> String {
        let full = self.path(key);
        let encoded: Vec<String> = full.as_ref().split('/').map(percent).collect();
        format!("{}/{}", self.loc.base_url(), encoded.join("/"))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        let text = e.to_string();
        if text.contains("NoSuchBucket") {
            return StoreError::Backend(format!(
                "bucket `{}` does not exist at {} (NoSuchBucket); create it first{}",
                self.loc.bucket,
                self.loc.endpoint.as_deref().unwrap_or("AWS"),
                if self.loc.lock.is_some() {
                    ", with Object Lock enabled"
                } else {
                    ""
                }
            ));
        }
        if text.contains("InvalidObjectState") {
            return StoreError::Archived {
                key: self.key_desc(key),
                class: self
                    .loc
                    .storage_class
                    .clone()
                    .unwrap_or_else(|| "an archive class".into()),
            };
        }
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
            _ => {
                if text.contains("403") || text.contains("AccessDenied") {
                    StoreError::PermissionDenied {
                        key: format!("{} ({text})", self.key_desc(key)),
                    }
                } else {
                    StoreError::Backend(format!("{op} {}: {text}", self.key_desc(key)))
                }
            }
        }
    }

    fn key_desc(&self, key: &str) -> String {
        format!("s3://{}/{}", self.loc.bucket, self.path(key))
    }

    /// Sends a request `object_store` has no call for, signed the same way,
    /// retrying transient failures (connection errors, 5xx, 429) with
    /// back-off. Returns the status and body of the final answer.
    fn signed(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), String> {
        self.signed_full(method, url, headers, body)
            .map(|(status, _, body)| (status, body))
    }

    fn signed_full(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        let retry = Retry {
            max_retries: self.loc.max_retries,
            retry_timeout: self.loc.retry_timeout,
            request_timeout: self.loc.request_timeout,
        };
        self.block_on(async {
            let credential = self
                .s3
                .credentials()
                .get_credential()
                .await
                .map_err(|e| format!("S3 credentials: {e}"))?;
            rest::send(&self.http, retry, || {
                let mut req = http::Request::builder().method(method.clone()).uri(url);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                let mut req: HttpRequest = req
                    .body(body.clone().into())
                    .map_err(|e| format!("building request: {e}"))?;
                AwsAuthorizer::new(&credential, "s3", &self.loc.region)
                    .try_authorize(&mut req, None)
                    .map_err(|e| format!("signing request: {e}"))?;
                Ok(req)
            })
            .await
        })
    }

    /// Refuses an immutable tier whose bucket cannot hold locks.
    fn check_lock_enabled(&self) -> Result<(), StoreError> {
        let url = format!("{}?object-lock", self.loc.base_url());
        let (status, body) = self
            .signed(http::Method::GET, &url, &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("bucket `{}`: {e}", self.loc.bucket)))?;
        let text = String::from_utf8_lossy(&body);
        if status.is_success() && text.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") {
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "bucket `{}` does not have S3 Object Lock enabled (HTTP {}), but the tier is immutable; \
             Object Lock can only be turned on when a bucket is created",
            self.loc.bucket,
            status.as_u16()
        )))
    }

    fn put_locked(
        &self,
        key: &str,
        data: &[u8],
        mode: LockMode,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let until = Utc::now() + chrono::Duration::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        let b64 = base64::engine::general_purpose::STANDARD;
        let md5 = {
            use md5::Digest;
            b64.encode(md5::Md5::digest(data))
        };
        let mut headers = vec![
            ("content-md5", md5),
            ("x-amz-object-lock-mode", mode.header().to_string()),
            (
                "x-amz-object-lock-retain-until-date",
                until.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ];
        if let Some(class) = self.class_for(key) {
            headers.push(("x-amz-storage-class", class.to_string()));
        }
        let (status, body) = self
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

    fn status_error(
        &self,
        op: &'static str,
        key: &str,
        status: http::StatusCode,
        body: &[u8],
    ) -> StoreError {
        let text = String::from_utf8_lossy(body);
        let code = between(&text, "<Code>", "</Code>").unwrap_or("");
        let message = between(&text, "<Message>", "</Message>").unwrap_or("");
        match status.as_u16() {
            404 => StoreError::NotFound(key.to_string()),
            403 => StoreError::PermissionDenied {
                key: format!("{} ({code}: {message})", self.key_desc(key)),
            },
            s => StoreError::Backend(format!(
                "{op} {}: HTTP {s} {code} {message}",
                self.key_desc(key)
            )),
        }
    }

    /// Deletes every version of an object on an immutable tier; a version
    /// still under lock is reported as `Locked` with its date (the server
    /// decides, coffer only reports).
    fn delete_versions(&self, key: &str) -> Result<(), StoreError> {
        let full = self.path(key);
        let url = format!(
            "{}?versions&prefix={}",
            self.loc.base_url(),
            percent(full.as_ref())
        );
        let (status, body) = self
            .signed(http::Method::GET, &url, &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("list versions of {key}: {e}")))?;
        if !status.is_success() {
            return Err(self.status_error("list versions of", key, status, &body));
        }
        let text = String::from_utf8_lossy(&body);
        let mut versions = Vec::new();
        for block in text
            .split("<Version>")
            .skip(1)
            .chain(text.split("<DeleteMarker>").skip(1))
        {
            if between(block, "<Key>", "</Key>") == Some(full.as_ref())
                && let Some(v) = between(block, "<VersionId>", "</VersionId>")
            {
                versions.push(v.to_string());
            }
        }
        for version in versions {
            let url = format!("{}?versionId={}", self.url(key), percent(&version));
            let (status, body) = self
                .signed(http::Method::DELETE, &url, &[], Bytes::new())
                .map_err(|e| StoreError::Backend(format!("delete {key}: {e}")))?;
            if status.is_success() || status.as_u16() == 404 {
                continue;
            }
            if status.as_u16() == 403 || status.as_u16() == 400 {
                return Err(StoreError::Locked {
                    key: key.to_string(),
                    until: self.retention_of(key, &version),
                });
            }
            return Err(self.status_error("delete", key, status, &body));
        }
        Ok(())
    }

    fn retention_of(&self, key: &str, version: &str) -> Option<String> {
        let url = format!("{}?versionId={}", self.url(key), percent(version));
        self.head_lock(&url).ok().flatten().map(|(_, until)| until)
    }

    /// The storage class `key` is written in: the tier's, for chunks.
    fn class_for(&self, key: &str) -> Option<&str> {
        self.loc
            .storage_class
            .as_deref()
            .filter(|_| super::chunk::archivable(key))
    }

    /// The Object Lock an object carries: mode and retain-until date, as
    /// the server reports them (`None` when it has none).
    pub fn lock_of(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        self.head_lock(&self.url(key))
    }

    fn head_lock(&self, url: &str) -> Result<Option<(String, String)>, StoreError> {
        let (status, headers, _) = self
            .signed_full(http::Method::HEAD, url, &[], Bytes::new())
            .map_err(StoreError::Backend)?;
        if !status.is_success() {
            return Err(StoreError::Backend(format!("HEAD {url}: HTTP {status}")));
        }
        let get = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(get("x-amz-object-lock-mode").zip(get("x-amz-object-lock-retain-until-date")))
    }
}

impl Store for S3Store {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        super::store::check_key(key)?;
        // Lock objects are rewritten and deleted by design: never locked.
        if let Some((mode, keep)) = self.loc.lock
            && !key.starts_with(super::lock::LOCKS_PREFIX)
        {
            return self.put_locked(key, data, mode, keep);
        }
        let payload = Bytes::copy_from_slice(data);
        let mut opts = object_store::PutOptions::default();
        if let Some(class) = self.class_for(key) {
            opts.attributes.insert(
                object_store::Attribute::StorageClass,
                class.to_string().into(),
            );
        }
        self.block_on(self.s3.put_opts(&self.path(key), payload.into(), opts))
            .map(drop)
            .map_err(|e| self.err("write", key, e))
    }

    /// HEAD tells the class (`x-amz-storage-class`, absent for STANDARD)
    /// and a thaw's state (`x-amz-restore`); a POST `?restore` asks for one
    /// ("RestoreObject" in the Amazon S3 API reference). GLACIER_IR and the
    /// other online classes read at once.
    fn thaw(&self, key: &str, days: u32, speed: ThawSpeed) -> Result<Thaw, StoreError> {
        super::store::check_key(key)?;
        let url = self.url(key);
        let (status, headers, body) = self
            .signed_full(http::Method::HEAD, &url, &[], Bytes::new())
            .map_err(|e| StoreError::Backend(format!("HEAD {}: {e}", self.key_desc(key))))?;
        if !status.is_success() {
            return Err(self.status_error("thaw", key, status, &body));
        }
        let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        match thaw_state(get("x-amz-storage-class"), get("x-amz-restore")) {
            Some(state) => Ok(state),
            None => {
                let request = format!(
                    "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days>\
                     <GlacierJobParameters><Tier>{}</Tier></GlacierJobParameters></RestoreRequest>",
                    speed.name()
                );
                let md5 = {
                    use md5::Digest;
                    base64::engine::general_purpose::STANDARD
                        .encode(md5::Md5::digest(request.as_bytes()))
                };
                let (status, body) = self
                    .signed(
                        http::Method::POST,
                        &format!("{url}?restore"),
                        &[("content-md5", md5)],
                        Bytes::from(request),
                    )
                    .map_err(|e| {
                        StoreError::Backend(format!("thaw {}: {e}", self.key_desc(key)))
                    })?;
                match status.as_u16() {
                    202 => Ok(Thaw::Requested),
                    // Restored already: the request only extends it.
                    200 => Ok(Thaw::Ready),
                    409 => Ok(Thaw::Pending),
                    _ => Err(self.status_error("thaw", key, status, &body)),
                }
            }
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        super::store::check_key(key)?;
        self.block_on(async {
            let r = self.s3.get(&self.path(key)).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| self.err("read", key, e))
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        super::store::check_key(key)?;
        let want = range.end - range.start;
        let got = self
            .block_on(self.s3.get_range(&self.path(key), range))
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))?;
        rest::whole_range(key, got, want)
    }

    fn immutable_for(&self) -> Option<std::time::Duration> {
        self.loc.lock.map(|(_, keep)| keep)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        super::store::check_prefix(prefix)?;
        let at = self.describe();
        self.block_on(rest::list_under(
            &self.s3,
            &self.loc.prefix,
            prefix,
            (&at, "remove that object with an S3 client"),
            |e| self.err("list", prefix, e),
        ))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        super::store::check_key(key)?;
        if self.loc.lock.is_some() {
            return self.delete_versions(key);
        }
        match self.block_on(self.s3.delete(&self.path(key))) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.loc.endpoint {
            Some(e) => format!("s3://{}/{} at {e}", self.loc.bucket, self.loc.prefix),
            None => format!("s3://{}/{}", self.loc.bucket, self.loc.prefix),
        }
    }
}

/// Where an object stands from its class and `x-amz-restore` header;
/// `None` when it is archived and no thaw was asked for.
fn thaw_state(class: Option<&str>, restore: Option<&str>) -> Option<Thaw> {
    if !matches!(class, Some("GLACIER" | "DEEP_ARCHIVE")) {
        return Some(Thaw::Ready);
    }
    let restore = restore?;
    if restore.contains("ongoing-request=\"true\"") {
        Some(Thaw::Pending)
    } else if restore.contains("ongoing-request=\"false\"") {
        Some(Thaw::Ready)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_header_tells_a_thaw_under_way_from_one_done() {
        assert_eq!(thaw_state(None, None), Some(Thaw::Ready));
        assert_eq!(thaw_state(Some("GLACIER_IR"), None), Some(Thaw::Ready));
        assert_eq!(thaw_state(Some("STANDARD_IA"), None), Some(Thaw::Ready));
        assert_eq!(thaw_state(Some("GLACIER"), None), None);
        assert_eq!(
            thaw_state(Some("DEEP_ARCHIVE"), Some("ongoing-request=\"true\"")),
            Some(Thaw::Pending)
        );
        assert_eq!(
            thaw_state(
                Some("GLACIER"),
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 04 Dec 2026 01:24:45 GMT\"")
            ),
            Some(Thaw::Ready)
        );
    }
}
