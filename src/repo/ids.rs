//! Validated names of what a repository holds. Every key that reaches a
//! store and every file name a restore writes is built from these types,
//! never from text read out of a repository or typed by a user: their
//! constructors refuse anything that could leave the directory it is put in
//! (a separator, `..`, an absolute path, NUL or another control character,
//! an empty or over-long name).

use std::fmt;

/// Longest name accepted: far above a UUID or a point id, well below any
/// file system's limit for one path component.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} `{value}` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong { what: &'static str, value: String },
    #[error("{what} `{value}` is `.` or `..`")]
    DotName { what: &'static str, value: String },
    #[error("{what} {value:?} holds a path separator, NUL or a control character")]
    BadCharacter { what: &'static str, value: String },
}

/// Checks one path component: what every id and file name must satisfy.
pub fn check_component(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(IdError::TooLong {
            what,
            value: value.chars().take(40).collect::<String>() + "…",
        });
    }
    if value == "." || value == ".." {
        return Err(IdError::DotName {
            what,
            value: value.to_string(),
        });
    }
    if value
        .chars()
        .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control())
    {
        return Err(IdError::BadCharacter {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_component($what, value)?;
                Ok($name(value.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

id_type!(
    /// A VM's instance UUID: the directory of its points.
    VmUuid,
    "VM uuid"
);
id_type!(
    /// A restore point's id: its directory under the VM's.
    PointId,
    "point id"
);
id_type!(
    /// A name a user gives that becomes a file name (a restored VM's name).
    FileStem,
    "name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_everything_that_could_leave_their_directory() {
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/etc",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "\u{7f}",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            assert!(VmUuid::parse(bad).is_err(), "{bad:?} accepted");
            assert!(PointId::parse(bad).is_err(), "{bad:?} accepted");
            assert!(FileStem::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "564d1a2b-0000-4000-8000-000000000001",
            "20261201T224753123Z-a1b2c3",
            "db01-restored",
            "..hidden",
            "a..b",
        ] {
            assert_eq!(VmUuid::parse(good).unwrap().as_str(), good);
            assert_eq!(PointId::parse(good).unwrap().as_str(), good);
        }
    }
}
