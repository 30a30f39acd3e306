//! What the object-storage stores (`s3`, `azure`) share for the requests
//! `object_store` has no call for: sending a signed request with retries
//! on transient failures, and reading the small XML answers.

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use object_store::client::{HttpClient, HttpRequest};
use object_store::path::Path as ObjectPath;

use super::store::{ObjectMeta, StoreError};

/// How often a failing request is retried, for how long at most, and the
/// time limit of one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub max_retries: usize,
    pub retry_timeout: Duration,
    pub request_timeout: Duration,
}

/// A status, the headers and the body of an answer.
pub(super) type Answer = (http::StatusCode, http::HeaderMap, Bytes);

/// Sends the request `make` builds (and signs: a signature carries the
/// time, so every attempt is built anew), retrying transient failures
/// (connection errors, no answer in time, 5xx, 429) with back-off from
/// 100 ms doubling to 10 s. Returns the final answer.
pub(super) async fn send(
    http: &HttpClient,
    retry: Retry,
    make: impl Fn() -> Result<HttpRequest, String>,
) -> Result<Answer, String> {
    let mut delay = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        let req = make()?;
        let outcome = match tokio::time::timeout(retry.request_timeout, http.execute(req)).await {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                match resp.into_body().bytes().await {
                    Ok(b) => Ok((status, headers, b)),
                    Err(e) => Err(format!("reading the answer: {e}")),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}s",
                retry.request_timeout.as_secs()
            )),
        };
        let transient = match &outcome {
            Ok((s, _, _)) => s.is_server_error() || s.as_u16() == 429,
            Err(_) => true,
        };
        if !transient
            || attempt >= retry.max_retries
            || started.elapsed() + delay > retry.retry_timeout
        {
            return match outcome {
                Ok(ok) => Ok(ok),
                Err(e) if attempt > 0 => Err(format!("{e} (after {attempt} retries)")),
                Err(e) => Err(e),
            };
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The text between the first `open` and the `close` after it.
pub(super) fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// Percent-encodes all but the unreserved characters of RFC 3986.
pub(super) fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The object of `key` below the store's own prefix (`""` for none).
pub(super) fn object_path(store_prefix: &str, key: &str) -> ObjectPath {
    if store_prefix.is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{store_prefix}/{key}"))
    }
}

/// Every object whose key starts with `prefix`, below the store's own
/// prefix, with the keys as the repository names them. The client refuses
/// a whole page when one name in it is not a valid path (a `..` segment):
/// only another client can have written it, and skipping the page would
/// hide good points, so the listing fails, naming the store (`at`) and
/// what to do (`fix`); other errors go through `err`.
pub(super) async fn list_under(
    store: &dyn ObjectStore,
    store_prefix: &str,
    prefix: &str,
    (at, fix): (&str, &str),
    err: impl Fn(object_store::Error) -> StoreError,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let full = object_path(store_prefix, prefix.trim_end_matches('/'));
    let strip = if store_prefix.is_empty() {
        0
    } else {
        store_prefix.len() + 1
    };
    let found: Vec<object_store::ObjectMeta> = store
        .list(Some(&full))
        .try_collect()
        .await
        .map_err(|e| match e {
            object_store::Error::InvalidPath { .. } => StoreError::Backend(format!(
                "listing `{prefix}` of {at}: {e}; coffer never writes such a key: {fix}"
            )),
            e => err(e),
        })?;
    Ok(found
        .into_iter()
        .map(|m| ObjectMeta {
            key: m.location.as_ref()[strip..].to_string(),
            size_bytes: m.size,
            modified: std::time::SystemTime::from(m.last_modified),
            tag: m.e_tag,
        })
        .filter(|m| m.key.starts_with(prefix))
        .collect())
}

/// A ranged read's bytes, refused when the object ended before the range
/// did (a truncated pack must not decode as a shorter blob).
pub(super) fn whole_range(key: &str, got: Vec<u8>, want: u64) -> Result<Vec<u8>, StoreError> {
    if got.len() as u64 != want {
        return Err(StoreError::Backend(format!(
            "`{key}`: a ranged read returned {} of {want} bytes (the object is shorter)",
            got.len()
        )));
    }
    Ok(got)
}
