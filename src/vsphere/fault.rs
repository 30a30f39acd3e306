//! vSphere faults as a typed enum a caller can match: a SOAP fault's
//! `detail`, a task's `info.error` and a property's `missingSet` all carry a
//! MethodFault whose concrete type is its `xsi:type`. The XML carries only
//! the concrete type, never the inheritance, so the subtypes that matter to
//! coffer are listed here by name.
//!
//! It reads XML only through `xml` and never imports `soap`, `response` or
//! `props`, which build on it. It must never decide what a fault means for
//! a backup beyond the facts the fault carries (`cbt_untrusted`).

use roxmltree::Node;

use super::xml::{child_text, find_child, moref_of, xsi_type};
use crate::inventory::MoRef;

/// Why a quiesced snapshot could not be taken; the policy's `consistency`
/// decides whether to fall back to a crash-consistent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuiesceFault {
    /// A VSS writer or pre-freeze script failed.
    Application,
    /// The guest file systems could not be frozen.
    Filesystem,
    /// VMware Tools is not running in the guest.
    ToolsUnavailable,
}

/// A fault from the vSphere API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VimFault {
    #[error("login refused: wrong user name or password ({message})")]
    InvalidLogin { message: String },
    #[error("the session is not authenticated (expired or logged out)")]
    NotAuthenticated { message: String },
    #[error("permission denied: the user lacks `{}` on {}",
        privilege.as_deref().unwrap_or("?"),
        object.as_ref().map_or_else(|| "?".to_string(), |o| o.to_string()))]
    NoPermission {
        object: Option<MoRef>,
        privilege: Option<String>,
        message: String,
    },
    #[error("free ESXi license: the API is read-only")]
    RestrictedVersion { message: String },
    #[error("another task is running on the object{}: {message}",
        task.as_ref().map_or_else(String::new, |t| format!(" ({t})")))]
    TaskInProgress {
        task: Option<MoRef>,
        message: String,
    },
    #[error("quiesce failed ({kind:?}): {message}")]
    Quiesce { kind: QuiesceFault, message: String },
    #[error("snapshot failed ({name}): {message}")]
    Snapshot { name: String, message: String },
    #[error("{name} on `{}`: {message}{}", file.as_deref().unwrap_or("?"),
        if *cbt_untrusted { " (CBT untrusted: a full backup is needed)" } else { "" })]
    File {
        name: String,
        file: Option<String>,
        message: String,
        /// Raised by QueryChangedDiskAreas: the change ids cannot be used.
        cbt_untrusted: bool,
    },
    #[error("invalid argument `{}`: {message}{}", property.as_deref().unwrap_or("?"),
        if *cbt_untrusted { " (CBT untrusted: a full backup is needed)" } else { "" })]
    InvalidArgument {
        property: Option<String>,
        message: String,
        /// Raised by QueryChangedDiskAreas: the change id is not valid for this disk.
        cbt_untrusted: bool,
    },
    #[error("{} no longer exists: {message}",
        object.as_ref().map_or_else(|| "the object".to_string(), |o| o.to_string()))]
    ManagedObjectNotFound {
        object: Option<MoRef>,
        message: String,
    },
    #[error("{name}: {message}")]
    Other { name: String, message: String },
}

const FILE_FAULTS: &[&str] = &[
    "FileFault",
    "CannotAccessFile",
    "CannotCreateFile",
    "CannotDeleteFile",
    "DirectoryNotEmpty",
    "FileAlreadyExists",
    "FileLocked",
    "FileNameTooLong",
    "FileNotFound",
    "FileNotWritable",
    "FileTooLarge",
    "IncorrectFileType",
    "NoDiskSpace",
    "NotADirectory",
    "NotAFile",
];

const SNAPSHOT_FAULTS: &[&str] = &[
    "SnapshotFault",
    "MemorySnapshotOnIndependentDisk",
    "MultipleSnapshotsNotSupported",
    "SnapshotDisabled",
    "SnapshotIncompatibleDeviceInVm",
    "SnapshotLocked",
    "SnapshotNoChange",
    "TooManySnapshotLevels",
    "SnapshotCopyNotSupported",
    "SnapshotMoveNotSupported",
    "SnapshotRevertIssue",
];

impl VimFault {
    /// The fault whose element is `node` (a SOAP `detail` child or a
    /// LocalizedMethodFault's `fault`). The type is its `xsi:type`; a fault
    /// element without one is named by its tag (`InvalidLoginFault`).
    pub fn from_node(node: Node<'_, '_>, message: &str) -> VimFault {
        let tag = node.tag_name().name();
        let name =
            xsi_type(node).unwrap_or_else(|| tag.strip_suffix("Fault").unwrap_or(tag).to_string());
        VimFault::from_parts(&name, Some(node), message)
    }

    /// The fault named `name` (its vim25 type), with its fields read from
    /// `node` when there is one.
    pub fn from_parts(name: &str, node: Option<Node<'_, '_>>, message: &str) -> VimFault {
        let message = message.to_string();
        let field = |local: &str| node.and_then(|n| child_text(n, local));
        let moref_field = |local: &str| node.and_then(|n| find_child(n, local)).and_then(moref_of);
        match name {
            "InvalidLogin" => VimFault::InvalidLogin { message },
            "NotAuthenticated" => VimFault::NotAuthenticated { message },
            "NoPermission" => VimFault::NoPermission {
                object: moref_field("object"),
                privilege: field("privilegeId"),
                message,
            },
            "RestrictedVersion" => VimFault::RestrictedVersion { message },
            "TaskInProgress" => VimFault::TaskInProgress {
                task: moref_field("task"),
                message,
            },
            "ApplicationQuiesceFault" => VimFault::Quiesce {
                kind: QuiesceFault::Application,
                message,
            },
            "FilesystemQuiesceFault" => VimFault::Quiesce {
                kind: QuiesceFault::Filesystem,
                message,
            },
            "ToolsUnavailable" => VimFault::Quiesce {
                kind: QuiesceFault::ToolsUnavailable,
                message,
            },
            n if SNAPSHOT_FAULTS.contains(&n) => VimFault::Snapshot {
                name: n.to_string(),
                message,
            },
            n if FILE_FAULTS.contains(&n) => VimFault::File {
                name: n.to_string(),
                file: field("file"),
                message,
                cbt_untrusted: false,
            },
            "InvalidArgument" | "InvalidIndexArgument" => VimFault::InvalidArgument {
                property: field("invalidProperty"),
                message,
                cbt_untrusted: false,
            },
            "ManagedObjectNotFound" => VimFault::ManagedObjectNotFound {
                object: moref_field("obj"),
                message,
            },
            n => VimFault::Other {
                name: n.to_string(),
                message,
            },
        }
    }

    /// The same fault, seen as the answer of QueryChangedDiskAreas: a file
    /// fault or an invalid argument there means the change ids cannot be
    /// trusted and the next backup must be a full one.
    pub fn from_changed_disk_areas(self) -> VimFault {
        match self {
            VimFault::File {
                name,
                file,
                message,
                ..
            } => VimFault::File {
                name,
                file,
                message,
                cbt_untrusted: true,
            },
            VimFault::InvalidArgument {
                property, message, ..
            } => VimFault::InvalidArgument {
                property,
                message,
                cbt_untrusted: true,
            },
            other => other,
        }
    }

    /// Whether change tracking must be reset before the next backup.
    pub fn cbt_untrusted(&self) -> bool {
        matches!(
            self,
            VimFault::File {
                cbt_untrusted: true,
                ..
            } | VimFault::InvalidArgument {
                cbt_untrusted: true,
                ..
            }
        )
    }

    /// Whether a new session may fix it (the transport logs in again once).
    pub fn is_not_authenticated(&self) -> bool {
        matches!(self, VimFault::NotAuthenticated { .. })
    }
}
