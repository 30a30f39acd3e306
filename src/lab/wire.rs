//! What the lab's SOAP side (`vim`) and its property renderer (`props`)
//! share, so that neither imports the other: the API version the lab claims,
//! a task as the lab keeps it for polling, and the writers of a managed
//! object reference, an `xsd:dateTime` and a fault's fields.
//!
//! It only formats values; it must never read a request, hold state or
//! decide an answer.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::state::Fault;
use crate::vsphere::soap::escape;

pub const API_VERSION: &str = "8.0.2.0";

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub name: String,
    pub entity: (String, String),
    pub entity_name: String,
    pub result: Option<(String, String)>,
    pub error: Option<Fault>,
    pub time: DateTime<Utc>,
    /// Still running: a power-on waiting for the answer to a question.
    pub running: bool,
}

pub fn fault_fields(f: &Fault) -> String {
    let mut s = String::new();
    for (k, v) in &f.fields {
        let _ = write!(s, "<{k}>{}</{k}>", escape(v));
    }
    for (k, kind, v) in &f.refs {
        s.push_str(&moref(k, kind, v));
    }
    s
}

pub fn moref(tag: &str, kind: &str, value: &str) -> String {
    format!("<{tag} type=\"{kind}\">{}</{tag}>", escape(value))
}

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
