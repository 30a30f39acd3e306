//! The plumbing every answer goes through: a well-formed SOAP 1.1 envelope
//! whose Body holds `<{method}Response>`, a SOAP fault or a
//! LocalizedMethodFault turned into a typed `VimFault`, and the readers of
//! required text, references, numbers, booleans and times that name what is
//! missing as a protocol error.
//!
//! It sits above `xml` and `fault` and below `props` and `soap`; it never
//! imports either of those. It must never perform I/O or decide what a fault
//! means for a backup.

use chrono::{DateTime, Utc};
use roxmltree::{Document, Node};

use super::Error;
use super::fault::VimFault;
use super::types::MoRef;
use super::xml::{SOAP_ENV_NS, child_text, find_child, is_vim, moref_of, text_of};

pub(super) fn protocol(method: &str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        method: method.to_string(),
        detail: detail.into(),
    }
}

pub(super) fn required_text(
    node: Node<'_, '_>,
    local: &str,
    method: &str,
) -> Result<String, Error> {
    child_text(node, local).ok_or_else(|| {
        protocol(
            method,
            format!("<{}> has no <{local}>", node.tag_name().name()),
        )
    })
}

pub(super) fn required_moref(
    node: Node<'_, '_>,
    local: &str,
    method: &str,
) -> Result<MoRef, Error> {
    find_child(node, local).and_then(moref_of).ok_or_else(|| {
        protocol(
            method,
            format!(
                "<{}> has no managed object reference <{local}>",
                node.tag_name().name()
            ),
        )
    })
}

pub(super) fn parse_number<T: std::str::FromStr>(
    text: &str,
    what: &str,
    method: &str,
) -> Result<T, Error> {
    text.trim()
        .parse()
        .map_err(|_| protocol(method, format!("<{what}> is not a number: {text:?}")))
}

pub(super) fn parse_bool(text: &str) -> bool {
    matches!(text.trim(), "true" | "1")
}

pub(super) fn parse_time(text: &str, what: &str, method: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| protocol(method, format!("<{what}> is not an xsd:dateTime: {text:?}")))
}

// ---- response plumbing ---------------------------------------------------

/// Parses `xml` and hands `f` the `<{method}Response>` element; a SOAP fault
/// becomes `Error::Fault`.
pub(super) fn with_response<T>(
    xml: &str,
    method: &str,
    f: impl FnOnce(Node<'_, '_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let doc = Document::parse(xml).map_err(|e| Error::Xml {
        method: method.to_string(),
        detail: e.to_string(),
    })?;
    let envelope = doc.root_element();
    if envelope.tag_name().name() != "Envelope"
        || envelope.tag_name().namespace() != Some(SOAP_ENV_NS)
    {
        return Err(protocol(method, "not a SOAP 1.1 envelope"));
    }
    let body = envelope
        .children()
        .find(|c| {
            c.is_element()
                && c.tag_name().name() == "Body"
                && c.tag_name().namespace() == Some(SOAP_ENV_NS)
        })
        .ok_or_else(|| protocol(method, "the envelope has no Body"))?;
    let first = body
        .children()
        .find(|c| c.is_element())
        .ok_or_else(|| protocol(method, "the Body is empty"))?;
    if first.tag_name().name() == "Fault" && first.tag_name().namespace() == Some(SOAP_ENV_NS) {
        return Err(Error::Fault(soap_fault(first)));
    }
    let expected = format!("{method}Response");
    if !is_vim(first, &expected) {
        return Err(protocol(
            method,
            format!(
                "expected <{expected}>, got <{}> in namespace {:?}",
                first.tag_name().name(),
                first.tag_name().namespace()
            ),
        ));
    }
    f(first)
}

/// A SOAP 1.1 Fault. Its `faultcode`, `faultstring` and `detail` are
/// unqualified; some stacks qualify them with the envelope namespace.
fn soap_fault(fault: Node<'_, '_>) -> VimFault {
    let part = |local: &str| {
        fault.children().find(|c| {
            c.is_element()
                && c.tag_name().name() == local
                && matches!(c.tag_name().namespace(), None | Some(SOAP_ENV_NS))
        })
    };
    let message = part("faultstring").map(text_of).unwrap_or_default();
    match part("detail").and_then(|d| d.children().find(|c| c.is_element())) {
        Some(detail) => VimFault::from_node(detail, &message),
        None => VimFault::Other {
            name: part("faultcode")
                .map(text_of)
                .unwrap_or_else(|| "SOAP fault".into()),
            message,
        },
    }
}

/// A LocalizedMethodFault (`<error>` of a TaskInfo, `<fault>` of a missingSet).
pub(super) fn localized_fault(node: Node<'_, '_>) -> VimFault {
    let message = child_text(node, "localizedMessage").unwrap_or_default();
    match find_child(node, "fault") {
        Some(fault) => VimFault::from_node(fault, &message),
        None => VimFault::Other {
            name: "MethodFault".into(),
            message,
        },
    }
}
