//! Healthcheck pings: `settings.healthcheck_url` is told when a run
//! starts, succeeds or fails, as healthchecks.io and services like it
//! expect (their "Pinging API": `URL/start` at the start, `URL` on success,
//! `URL/fail` on failure, the body kept as the ping's log). A dead-man's
//! switch: when the daemon stops running, the service notices the silence.
//!
//! A ping that cannot be sent is said and never changes the run.

use std::time::Duration;

use anyhow::{Result, anyhow};

/// How long a ping may take: the run waits for it.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest body sent (healthchecks.io keeps 100 kB of a ping's body).
const BODY_LIMIT: usize = 100_000;

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

/// The URL a ping goes to.
pub fn ping_url(base: &str, ping: Ping) -> String {
    let base = base.trim_end_matches('/');
    match ping {
        Ping::Start => format!("{base}/start"),
        Ping::Success => base.to_string(),
        Ping::Fail => format!("{base}/fail"),
    }
}

/// POSTs the ping with `body` (cut to what the services keep).
pub fn ping(base: &str, ping: Ping, body: &str) -> Result<()> {
    let url = ping_url(base, ping);
    let mut end = body.len().min(BODY_LIMIT);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let client = crate::vsphere::transport::plain_client(PING_TIMEOUT)?;
    let resp = client
        .post(&url)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(body[..end].to_string())
        .send()
        .map_err(|e| anyhow!("healthcheck ping to {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(anyhow!("healthcheck ping to {url}: HTTP {status}"));
    }
    tracing::debug!(%url, "healthcheck pinged");
    Ok(())
}
