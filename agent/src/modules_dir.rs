//! `modules list | enable | disable`: module files in modules.d/ are enabled
//! as `NAME.yml` and disabled as `NAME.yml.disabled`, as in Filebeat.

use std::fs;
use std::path::{Path, PathBuf};

/// Why a module file could not be renamed or listed.
#[derive(Debug, thiserror::Error)]
pub enum ModulesDirError {
    /// No `NAME.yml` or `NAME.yml.disabled` exists.
    #[error("module `{name}` not found: neither {enabled} nor {disabled} exists")]
    NotFound {
        /// The module name.
        name: String,
        /// The enabled file name looked for.
        enabled: String,
        /// The disabled file name looked for.
        disabled: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Module files of one modules.d folder.
#[derive(Debug, Clone)]
pub struct ModulesDir {
    directory: PathBuf,
}

/// The enabled and disabled module names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleListing {
    /// Names with a `NAME.yml` file.
    pub enabled: Vec<String>,
    /// Names with a `NAME.yml.disabled` file.
    pub disabled: Vec<String>,
}

impl ModulesDir {
    /// The folder holding the module files.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.directory
    }

    /// Lists module files by state, sorted.
    pub fn list(&self) -> Result<ModuleListing, ModulesDirError> {
        let mut listing = ModuleListing::default();
        let read = match fs::read_dir(&self.directory) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(source) => return Err(self.io_error(&self.directory, source)),
        };
        for entry in read.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(module) = name.strip_suffix(".yml.disabled") {
                listing.disabled.push(module.to_owned());
            } else if let Some(module) = name.strip_suffix(".yml") {
                listing.enabled.push(module.to_owned());
            }
        }
        listing.enabled.sort();
        listing.disabled.sort();
        Ok(listing)
    }

    /// Enables `name`; `Ok(false)` when it already was.
    pub fn enable(&self, name: &str) -> Result<bool, ModulesDirError> {
        self.switch(name, true)
    }

    /// Disables `name`; `Ok(false)` when it already was.
    pub fn disable(&self, name: &str) -> Result<bool, ModulesDirError> {
        self.switch(name, false)
    }

    fn switch(&self, name: &str, enable: bool) -> Result<bool, ModulesDirError> {
        let enabled = self.directory.join(format!("{name}.yml"));
        let disabled = self.directory.join(format!("{name}.yml.disabled"));
        let (from, to) = if enable {
            (&disabled, &enabled)
        } else {
            (&enabled, &disabled)
        };
        let plain_name = !name.is_empty() && !name.contains(['/', '\\']) && name != "..";
        if plain_name && to.is_file() && !from.exists() {
            return Ok(false);
        }
        if !plain_name || !from.is_file() {
            return Err(ModulesDirError::NotFound {
                name: name.to_owned(),
                enabled: enabled.display().to_string(),
                disabled: disabled.display().to_string(),
            });
        }
        fs::rename(from, to).map_err(|source| self.io_error(from, source))?;
        Ok(true)
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> ModulesDirError {
        ModulesDirError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_disable_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("misp.yml.disabled"), "- module: threatintel\n").unwrap();
        fs::write(dir.path().join("other.yml"), "[]\n").unwrap();
        fs::write(dir.path().join("README.md"), "not a module").unwrap();
        let modules = ModulesDir::new(dir.path());
        assert_eq!(modules.list().unwrap().disabled, ["misp"]);
        assert!(modules.enable("misp").unwrap());
        assert!(!modules.enable("misp").unwrap());
        assert_eq!(modules.list().unwrap().enabled, ["misp", "other"]);
        assert!(modules.disable("misp").unwrap());
        assert_eq!(
            modules.list().unwrap(),
            ModuleListing {
                enabled: vec!["other".into()],
                disabled: vec!["misp".into()]
            }
        );
        assert!(matches!(
            modules.enable("nope"),
            Err(ModulesDirError::NotFound { .. })
        ));
    }
}
