//! Namespace-aware reading of vim25 XML: the three namespaces, the child
//! elements of a node by vim25 local name, an element's text, a managed
//! object reference, an `xsi:type`. Elements are matched by namespace URI
//! and local name, never by prefix.
//!
//! It is the lowest file of the client: `fault`, `response`, `props` and
//! `soap` use it, and it uses none of them. It must never build a request,
//! interpret an answer or perform I/O.

use roxmltree::Node;

use crate::inventory::MoRef;

pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const VIM_NS: &str = "urn:vim25";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

pub(super) fn is_vim(node: Node<'_, '_>, local: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == local
        && node.tag_name().namespace() == Some(VIM_NS)
}

/// The first vim25 child element named `local`.
pub(super) fn find_child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is_vim(*c, local))
}

pub(super) fn children_named<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    local: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| is_vim(*c, local))
}

/// The text of an element: the concatenation of its text children, so that
/// an element holding only an entity or a CDATA section reads correctly.
pub(super) fn text_of(node: Node<'_, '_>) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect()
}

pub(super) fn child_text(node: Node<'_, '_>, local: &str) -> Option<String> {
    find_child(node, local).map(text_of)
}

/// A ManagedObjectReference element: `<x type="VirtualMachine">vm-1</x>`.
/// The plain `type` attribute, not `xsi:type`.
pub(super) fn moref_of(node: Node<'_, '_>) -> Option<MoRef> {
    // roxmltree's `attribute("type")` would also match `xsi:type`, which a
    // task's `result` carries next to the plain one.
    let kind = node
        .attributes()
        .find(|a| a.name() == "type" && a.namespace().is_none())?;
    Some(MoRef::new(kind.value(), text_of(node).trim()))
}

/// The local name of the `xsi:type` of an element, its prefix (if any)
/// resolved by namespace rather than by spelling.
pub(super) fn xsi_type(node: Node<'_, '_>) -> Option<String> {
    let value = node.attribute((XSI_NS, "type"))?;
    Some(match value.split_once(':') {
        Some((_prefix, local)) => local.to_string(),
        None => value.to_string(),
    })
}
