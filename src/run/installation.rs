//! The installation id: a random name created once per state directory and
//! kept in `<state_dir>/installation-id`. Every snapshot coffer takes
//! carries it (with the run id) in its description, so that one coffer
//! never removes the snapshot of another coffer's backup that is still
//! reading it (see `vm_backup::LeftoverVerdict`).

use std::io::Write;
use std::path::Path;

/// The file inside the state dir.
pub const FILE_NAME: &str = "installation-id";

#[derive(Debug, thiserror::Error)]
pub enum InstallationError {
    #[error("reading or creating the installation id {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the installation id {path} holds `{found}`, not 16 lowercase hex digits; \
         remove the file and coffer creates a new one"
    )]
    Damaged { path: String, found: String },
}

/// An installation id: 16 lowercase hex digits.
pub fn is_valid(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id of the installation whose state dir is `state_dir`, created
/// (exclusively: two processes starting at once agree on one) when absent.
pub fn id(state_dir: &Path) -> Result<String, InstallationError> {
    let path = state_dir.join(FILE_NAME);
    let io = |source| InstallationError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("the OS random source works");
    let fresh = hex::encode(r);
    let created = (|| -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
        writeln!(tmp, "{fresh}")?;
        tmp.as_file().sync_all()?;
        // Fails with AlreadyExists when another process was first.
        tmp.persist_noclobber(&path).map_err(|e| e.error)?;
        Ok(())
    })();
    match created {
        Ok(()) => Ok(fresh),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let found = text.trim();
            if is_valid(found) {
                Ok(found.to_string())
            } else {
                Err(InstallationError::Damaged {
                    path: path.display().to_string(),
                    found: found.chars().take(40).collect(),
                })
            }
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installation_keeps_its_id_and_another_state_dir_gets_another() {
        let t = tempfile::tempdir().unwrap();
        let a = id(&t.path().join("a")).unwrap();
        assert!(is_valid(&a));
        assert_eq!(id(&t.path().join("a")).unwrap(), a);
        assert_ne!(id(&t.path().join("b")).unwrap(), a);
    }
}
