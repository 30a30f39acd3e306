//! The vSphere Web Services client: what coffer says to ESXi and vCenter
//! (DESIGN.md §5). This part owns the SOAP subset coffer speaks (`soap`:
//! pure envelope builders and the parsers of each answer, `props`: property
//! collector answers, `response`: the envelope and fault plumbing, `xml`:
//! namespace-aware element helpers), the faults as a typed enum (`fault`),
//! the answers as plain values (`types`, over the neutral model of
//! `crate::inventory`, which it fills in and re-exports), one blocking HTTPS
//! transport with certificate pinning (`transport`) and a logged-in session
//! that re-logs in once when the server forgets it (`session`). The files
//! read downward: `xml` ← `fault` ← `response` ← `props` ← `soap`.
//!
//! It never decides anything: which VM to back up, whether CBT can be trusted
//! for an incremental, when to remove a snapshot are the planner's and the
//! runner's calls. It never trusts a certificate it was not told to trust:
//! there is no "accept anything" mode.

pub mod datastore;
pub mod delta;
#[cfg(test)]
mod delta_tests;
pub mod fault;
pub mod gate;
pub mod nfc;
pub mod placement;
mod props;
mod response;
pub mod session;
pub mod soap;
pub mod transport;
pub mod types;
pub mod vmx;
mod xml;

#[cfg(test)]
mod soap_tests;

use std::time::Duration;

pub use fault::{QuiesceFault, VimFault};
pub use session::Session;
pub use types::{
    ChangeId, DiskChangeInfo, GuestQuiesceFacts, MoRef, ServiceContent, TaskInfo, VmDisk, VmRecord,
};

/// Everything that can go wrong talking to a vSphere endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a vSphere fault.
    #[error(transparent)]
    Fault(#[from] VimFault),
    #[error("the answer to {method} is not well-formed XML: {detail}")]
    Xml { method: String, detail: String },
    #[error("unexpected answer to {method}: {detail}")]
    Protocol { method: String, detail: String },
    /// A proxy, a login page or a web UI answered instead of the SDK.
    #[error(
        "{url} answered HTTP {status} with {content_type:?}, not SOAP \
         (is the URL the host's or vCenter's, without a path?); it begins with {first_bytes:?}"
    )]
    NotSoap {
        url: String,
        status: u16,
        content_type: String,
        first_bytes: String,
    },
    /// Connection, TLS or HTTP failure; `detail` is the whole cause chain
    /// (reqwest's own message alone says only "error sending request").
    #[error("cannot reach {url}: {detail}")]
    Http { url: String, detail: String },
    #[error(
        "the certificate of {host} does not match the pinned thumbprint: \
         it presented {presented}, the policy pins {expected}; \
         if the host's certificate was renewed on purpose, pin `thumbprint = \"{presented}\"`"
    )]
    ThumbprintMismatch {
        host: String,
        expected: String,
        presented: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("task {task} did not finish within {waited:?}")]
    TaskTimeout { task: MoRef, waited: Duration },
}

impl Error {
    pub(crate) fn http(url: &str, err: &reqwest::Error) -> Error {
        let mut detail = err.to_string();
        let mut cause = std::error::Error::source(err);
        while let Some(c) = cause {
            let text = c.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            cause = c.source();
        }
        Error::Http {
            url: url.to_string(),
            detail,
        }
    }

    /// The vSphere fault, when the server gave one.
    pub fn fault(&self) -> Option<&VimFault> {
        match self {
            Error::Fault(f) => Some(f),
            _ => None,
        }
    }
}
