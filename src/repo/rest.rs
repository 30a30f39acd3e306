//! What the object-storage stores (`s3`, `azure`) share for the requests
//! `object_store` has no call for: sending a signed request with retries
//! on transient failures, and reading the small XML answers.

use std::time::Duration;

use bytes::Bytes;
use object_store::client::{HttpClient, HttpRequest};

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
