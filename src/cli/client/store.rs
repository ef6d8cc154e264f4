//! The client's one file: which racks you are logged in to, through which
//! gateway, with which token, and which rack is current.
//!
//! It holds bearer tokens, so the directory is 0700 and the file 0600, and
//! every write goes to a temporary file in the same directory that is synced
//! and renamed over the old one: a crash or a full disk never leaves half a
//! file. A file that doesn't parse is reported with its path and left alone,
//! never silently replaced, because it may hold logins to other racks.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the config file can't be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot find where to keep logins: set HOME (or XDG_CONFIG_HOME)")]
    NoHome,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a valid rack-gateway config ({reason}): fix it, or remove it and log in again"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot make {path} private ({source}): it holds your tokens; fix its owner and permissions (chmod go-rwx)")]
    Private { path: PathBuf, source: io::Error },
}

/// One rack's login. Not `Debug`-derived: the token must never reach a log
/// line or a panic message.
#[derive(Clone, Serialize, Deserialize)]
pub struct RackLogin {
    /// The gateway's normalized base URL (`https://host[:port]`).
    pub gateway: String,
    /// The gateway token; absent after `logout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for RackLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackLogin")
            .field("gateway", &self.gateway)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("email", &self.email)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Logins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub racks: BTreeMap<String, RackLogin>,
}

/// The logins and the file they came from.
#[derive(Debug)]
pub struct Store {
    pub path: PathBuf,
    pub logins: Logins,
}

/// `$XDG_CONFIG_HOME/rack-gateway/config.json`, else
/// `~/.config/rack-gateway/config.json`. A relative XDG_CONFIG_HOME is
/// ignored, as the XDG spec asks.
pub(crate) fn default_path() -> Result<PathBuf, StoreError> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".config"))
        })
        .ok_or(StoreError::NoHome)?;
    Ok(base.join("rack-gateway").join("config.json"))
}

impl Store {
    /// Loads the default file; a missing file is an empty store.
    pub fn load() -> Result<Store, StoreError> {
        Store::load_from(default_path()?)
    }

    pub(crate) fn load_from(path: PathBuf) -> Result<Store, StoreError> {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Store {
                    path,
                    logins: Logins::default(),
                })
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let mut bytes = Vec::new();
        if let Err(source) = file.read_to_end(&mut bytes) {
            return Err(StoreError::Read { path, source });
        }
        make_private(&path, &file)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let logins: Logins = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if let Some(bad) = logins
            .racks
            .keys()
            .find(|r| !crate::config::valid_rack_name(r))
        {
            return Err(corrupt(format!("`{bad}` is not a rack name")));
        }
        Ok(Store { path, logins })
    }

    /// Writes the store atomically with owner-only permissions.
    pub fn save(&self) -> Result<(), StoreError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err(dir))?;
        fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(write_err(dir))?;
        let mut json = serde_json::to_vec_pretty(&self.logins).expect("logins serialize");
        json.push(b'\n');
        let tmp = dir.join(format!(
            ".config.json.{}.tmp",
            crate::identity::seal::random_token(9)
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // The umask may have taken more than the group and other bits.
            f.set_permissions(Permissions::from_mode(0o600))?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(write_err(&self.path))
    }
}

/// A file copied or restored with looser permissions than `save` gives it
/// (a backup, a dotfiles sync) is made owner-only again on every read, and
/// the person told: others on the machine may have read its tokens, and a
/// directory open to them lets them swap the file for one naming their
/// gateway.
fn make_private(path: &Path, file: &File) -> Result<(), StoreError> {
    let private = |p: &Path| {
        let path = p.to_path_buf();
        move |source| StoreError::Private { path, source }
    };
    let fix = |p: &Path, mode: u32, to: u32, set: &dyn Fn() -> io::Result<()>| {
        if mode & 0o077 == 0 {
            return Ok(());
        }
        set().map_err(private(p))?;
        eprintln!(
            "rack-gateway: {} was open to other users (mode {mode:o}); it is now {to:o}. \
             Its tokens may have been read: log in again to replace them.",
            p.display()
        );
        Ok(())
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mode = fs::metadata(dir)
            .map_err(private(dir))?
            .permissions()
            .mode()
            & 0o777;
        fix(dir, mode, 0o700, &|| {
            fs::set_permissions(dir, Permissions::from_mode(0o700))
        })?;
    }
    let mode = file.metadata().map_err(private(path))?.permissions().mode() & 0o777;
    fix(path, mode, 0o600, &|| {
        file.set_permissions(Permissions::from_mode(0o600))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/rack-gateway/config.json");
        let mut store = Store::load_from(path.clone()).unwrap();
        assert!(store.logins.racks.is_empty());
        store.logins.current = Some("staging".into());
        store.logins.racks.insert(
            "staging".into(),
            RackLogin {
                gateway: "https://gw.example.com".into(),
                token: Some("t0k3n".into()),
                email: Some("a@example.com".into()),
                expires_at: Some(123),
            },
        );
        store.save().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let again = Store::load_from(path.clone()).unwrap();
        assert_eq!(again.logins.current.as_deref(), Some("staging"));
        assert_eq!(
            again.logins.racks["staging"].token.as_deref(),
            Some("t0k3n")
        );
        assert!(!format!("{again:?}").contains("t0k3n"));
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["config.json"], "no temporary files left");
    }

    #[test]
    fn corrupt_files_are_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for bad in [
            &b"{\"racks\": {\"staging\": {}}}"[..],
            b"not json",
            b"{\"racks\": {\"Bad Name\": {\"gateway\": \"https://x\"}}}",
        ] {
            fs::write(&path, bad).unwrap();
            let err = Store::load_from(path.clone()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("remove it and log in again"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }
}
