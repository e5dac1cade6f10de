//! The keystore (`${path.data}/threatbeat.keystore`, like Beats'): secrets
//! referenced from the config as `${KEY}`, consulted before the environment.
//!
//! Format: JSON `{"version": 1, "secrets": {"KEY": "<base64 of the value>"}}`.
//! Base64 only keeps values from being read at a glance; it is not encryption.
//! The protection is the file mode: created 0600, and refused when group or
//! others may read it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The keystore's file name under `path.data`.
pub const FILE_NAME: &str = "threatbeat.keystore";
const VERSION: u32 = 1;

/// Why the keystore could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No keystore file.
    #[error("{0}: no keystore; create one with `threatbeat keystore create`")]
    Missing(String),
    /// `create` on an existing keystore.
    #[error("{0}: the keystore already exists; pass --force to replace it (its secrets are lost)")]
    Exists(String),
    /// Group or others may read the file.
    #[error("{path}: the keystore is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The file is not a keystore.
    #[error(
        "{path}: not a valid keystore ({reason}); recreate it with `threatbeat keystore create --force`"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key that cannot be referenced as `${KEY}`.
    #[error("invalid key `{0}`: use letters, digits, `_`, `.` and `-`")]
    InvalidKey(String),
    /// `add` of an existing key without `--force`.
    #[error("key `{0}` already exists in {1}; pass --force to replace its value")]
    KeyExists(String, String),
    /// `remove` of an unknown key.
    #[error("key `{0}` is not in the keystore {1}")]
    UnknownKey(String, String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    version: u32,
    secrets: BTreeMap<String, String>,
}

/// An opened keystore.
pub struct Keystore {
    path: PathBuf,
    secrets: BTreeMap<String, String>,
}

impl Keystore {
    /// The keystore's path for `data` (`path.data`).
    pub fn path_in(data: &Path) -> PathBuf {
        data.join(FILE_NAME)
    }

    /// Creates an empty keystore (mode 0600); `force` replaces an existing one.
    pub fn create(path: &Path, force: bool) -> Result<Keystore, KeystoreError> {
        if path.exists() && !force {
            return Err(KeystoreError::Exists(path.display().to_string()));
        }
        let keystore = Keystore {
            path: path.to_path_buf(),
            secrets: BTreeMap::new(),
        };
        keystore.save()?;
        Ok(keystore)
    }

    /// Opens an existing keystore.
    pub fn open(path: &Path) -> Result<Keystore, KeystoreError> {
        let display = path.display().to_string();
        let metadata = match fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::Missing(display))
            }
            Err(source) => {
                return Err(KeystoreError::Io {
                    path: display,
                    source,
                })
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeystoreError::Permissions { path: display, mode });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = fs::read_to_string(path).map_err(|source| KeystoreError::Io {
            path: display.clone(),
            source,
        })?;
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: display.clone(),
            reason,
        };
        let file: KeystoreFile = serde_json::from_str(&text).map_err(|error| corrupt(error.to_string()))?;
        if file.version != VERSION {
            return Err(corrupt(format!("unsupported version {}", file.version)));
        }
        let mut secrets = BTreeMap::new();
        for (key, encoded) in file.secrets {
            let bytes = STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| corrupt(format!("the value of `{key}` is not base64")))?;
            let value = String::from_utf8(bytes)
                .map_err(|_| corrupt(format!("the value of `{key}` is not UTF-8")))?;
            secrets.insert(key, value);
        }
        Ok(Keystore {
            path: path.to_path_buf(),
            secrets,
        })
    }

    /// The secrets under `data`, or none when there is no keystore.
    pub fn load_values(data: &Path) -> Result<BTreeMap<String, String>, KeystoreError> {
        match Keystore::open(&Keystore::path_in(data)) {
            Ok(keystore) => Ok(keystore.secrets),
            Err(KeystoreError::Missing(_)) => Ok(BTreeMap::new()),
            Err(error) => Err(error),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys, sorted (never the values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// Stores `value` under `key` and saves; `force` replaces an existing value.
    pub fn add(&mut self, key: &str, value: &str, force: bool) -> Result<(), KeystoreError> {
        let valid = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(KeystoreError::InvalidKey(key.to_owned()));
        }
        if self.secrets.contains_key(key) && !force {
            return Err(KeystoreError::KeyExists(
                key.to_owned(),
                self.path.display().to_string(),
            ));
        }
        self.secrets.insert(key.to_owned(), value.to_owned());
        self.save()
    }

    /// Removes `key` and saves.
    pub fn remove(&mut self, key: &str) -> Result<(), KeystoreError> {
        if self.secrets.remove(key).is_none() {
            return Err(KeystoreError::UnknownKey(
                key.to_owned(),
                self.path.display().to_string(),
            ));
        }
        self.save()
    }

    // Writes a 0600 temporary file beside the keystore, then renames it over:
    // a crash leaves the old keystore or the new one, never half of one.
    fn save(&self) -> Result<(), KeystoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeystoreError::Io { path, source }
        };
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = KeystoreFile {
            version: VERSION,
            secrets: self
                .secrets
                .iter()
                .map(|(key, value)| (key.clone(), STANDARD.encode(value.as_bytes())))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|error| KeystoreError::Corrupt {
            path: self.path.display().to_string(),
            reason: error.to_string(),
        })?;
        let temporary = self.path.with_extension("keystore.tmp");
        let _ = fs::remove_file(&temporary);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut handle = options.open(&temporary).map_err(io(&temporary))?;
        handle
            .write_all(text.as_bytes())
            .and_then(|()| handle.sync_all())
            .map_err(io(&temporary))?;
        fs::rename(&temporary, &self.path).map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600_and_keys_only_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = Keystore::path_in(dir.path());
        let mut keystore = Keystore::create(&path, false).unwrap();
        keystore.add("MISP_KEY", "s3cr3t value", false).unwrap();
        assert!(matches!(
            keystore.add("MISP_KEY", "x", false),
            Err(KeystoreError::KeyExists(_, _))
        ));
        assert!(matches!(
            keystore.add("bad key", "x", false),
            Err(KeystoreError::InvalidKey(_))
        ));
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let values = Keystore::load_values(dir.path()).unwrap();
        assert_eq!(values["MISP_KEY"], "s3cr3t value");
        let mut reopened = Keystore::open(&path).unwrap();
        assert_eq!(reopened.keys().collect::<Vec<_>>(), ["MISP_KEY"]);
        reopened.remove("MISP_KEY").unwrap();
        assert!(matches!(
            reopened.remove("MISP_KEY"),
            Err(KeystoreError::UnknownKey(_, _))
        ));
        assert!(matches!(
            Keystore::create(&path, false),
            Err(KeystoreError::Exists(_))
        ));
    }

    #[test]
    fn missing_open_permissions_and_corruption_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keystore::load_values(dir.path()).unwrap().is_empty());
        let path = Keystore::path_in(dir.path());
        fs::write(&path, "{not json").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let error = Keystore::open(&path).err().unwrap();
            assert!(error.to_string().contains("chmod 600"), "{error}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let error = Keystore::open(&path).err().unwrap();
        assert!(matches!(error, KeystoreError::Corrupt { .. }), "{error}");
    }
}
