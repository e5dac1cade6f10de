//! Finding, reading and layering the main configuration:
//! built-in defaults ← the file ← `THREATBEAT_*` environment ← `-E key=value`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::value::{Dict, Map as FigmentMap};
use figment::{Figment, Metadata, Profile, Provider};
use serde_json::{Map, Value};
use threatbeat_core::config::check_dotted_keys;
use threatbeat_core::{ConfigError, NullKeys, Origin};

use super::expand::Expander;
use super::settings::{Paths, Settings};
use crate::keystore::Keystore;
use crate::modules::{parse_module_list, parse_yaml, ModuleEntry};

/// The prefix of environment variables that set config keys.
pub const ENV_PREFIX: &str = "THREATBEAT_";
/// Separates nesting levels in environment variable names (`THREATBEAT_LOGGING__LEVEL`).
pub const ENV_SEPARATOR: &str = "__";
/// Where the main file is looked for when `-c` is not given, in order.
pub const DEFAULT_CONFIG_FILES: [&str; 2] = ["threatbeat.yml", "/etc/threatbeat/threatbeat.yml"];

/// What the command line and the process contribute to loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-c FILE`.
    pub config_file: Option<PathBuf>,
    /// `-E key=value` flags, in order (`--path.*` flags are added here too).
    pub overrides: Vec<String>,
    /// The process environment (`${VAR}` expansion and `THREATBEAT_*` keys).
    pub env: BTreeMap<String, String>,
    /// The working directory, base of relative `-c` and default file names.
    pub cwd: PathBuf,
}

impl LoadOptions {
    /// Options reading the real process environment and working directory.
    pub fn from_process(config_file: Option<PathBuf>, overrides: Vec<String>) -> Self {
        Self {
            config_file,
            overrides,
            env: std::env::vars().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

/// The loaded main configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The main file.
    pub file: PathBuf,
    /// The typed settings.
    pub settings: Settings,
    /// The merged raw configuration (all layers).
    pub merged: Value,
    /// The resolved paths.
    pub paths: Paths,
    /// Values expanded from secret-looking variables, for redaction.
    pub secrets: Vec<String>,
    /// The keystore over the process environment, for `${VAR}` in modules.d files.
    env: BTreeMap<String, String>,
}

/// Finds the main file: `-c`, else `./threatbeat.yml`, else `/etc/threatbeat/threatbeat.yml`.
pub fn discover(options: &LoadOptions) -> Result<PathBuf, ConfigError> {
    if let Some(file) = &options.config_file {
        let file = options.cwd.join(file);
        if !file.is_file() {
            return Err(Origin::file(&file).error("the config file given with -c does not exist"));
        }
        return Ok(file);
    }
    DEFAULT_CONFIG_FILES
        .iter()
        .map(|candidate| options.cwd.join(candidate))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            ConfigError::general(format!(
                "no config file found: looked for {} and {}; pass one with -c FILE",
                options.cwd.join(DEFAULT_CONFIG_FILES[0]).display(),
                DEFAULT_CONFIG_FILES[1]
            ))
        })
}

/// Loads, layers, expands and checks the main configuration. `${VAR}` reads
/// the keystore (`${path.data}/threatbeat.keystore`) first, then the environment.
pub fn load(options: &LoadOptions) -> Result<LoadedConfig, ConfigError> {
    load_checking(options, Unset::Error)
}

/// Like [`load`], but an unset `${VAR}` without a default under `output.*`
/// expands to nothing: for commands that never talk to the output
/// (`modules`, `test modules`), which must not wait for its API key.
pub fn load_without_output(options: &LoadOptions) -> Result<LoadedConfig, ConfigError> {
    load_checking(options, Unset::EmptyInOutput)
}

fn load_checking(options: &LoadOptions, unset: Unset) -> Result<LoadedConfig, ConfigError> {
    // The keystore lives under path.data, which the config sets: a first,
    // lenient pass finds it, the second expands with its secrets.
    let no_keystore = BTreeMap::new();
    let paths = load_with(options, &no_keystore, Unset::Empty, None)?.paths;
    let keystore = Keystore::load_values(&paths.data).map_err(|error| {
        ConfigError::general(format!("cannot read the keystore: {error}"))
            .in_file(&Keystore::path_in(&paths.data).display().to_string())
    })?;
    let mut config = load_with(options, &keystore, unset, Some(&Keystore::path_in(&paths.data)))?;
    config
        .secrets
        .extend(keystore.into_values().filter(|value| !value.is_empty()));
    Ok(config)
}

/// The resolved paths only, with unset `${VAR}`s expanded to nothing: for
/// commands that must work before every referenced secret exists (`keystore`).
pub fn load_paths(options: &LoadOptions) -> Result<Paths, ConfigError> {
    Ok(load_with(options, &BTreeMap::new(), Unset::Empty, None)?.paths)
}

/// What an unset `${VAR}` without a default becomes in the main file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unset {
    /// An error naming the file and key.
    Error,
    /// Nothing, everywhere.
    Empty,
    /// Nothing under `output.*`, an error elsewhere.
    EmptyInOutput,
}

fn load_with(
    options: &LoadOptions,
    keystore: &BTreeMap<String, String>,
    unset: Unset,
    keystore_path: Option<&Path>,
) -> Result<LoadedConfig, ConfigError> {
    let mut variables = options.env.clone();
    variables.extend(keystore.iter().map(|(key, value)| (key.clone(), value.clone())));
    let file = discover(options)?;
    let file_name = file.display().to_string();
    let origin = Origin::file(&file);
    let text = fs::read_to_string(&file).map_err(|error| origin.error(format!("cannot read: {error}")))?;
    let mut from_file = match parse_yaml(&text, &origin)? {
        Value::Null => Value::Object(Map::new()),
        value @ Value::Object(_) => value,
        _ => return Err(origin.error("the main config must be a map of settings")),
    };
    check_dotted_keys(&from_file, &origin)?;
    let mut expander = match unset {
        Unset::Empty => Expander::lenient(&variables),
        Unset::Error | Unset::EmptyInOutput => match keystore_path {
            Some(path) => Expander::new(&variables).naming_keystore(path),
            None => Expander::new(&variables),
        },
    };
    if let (Unset::EmptyInOutput, Value::Object(map)) = (unset, &mut from_file) {
        // Top-level keys may be dotted (`output.elasticsearch.api_key:`).
        let mut output_expander = Expander::lenient(&variables);
        for (key, value) in map.iter_mut() {
            let in_output = key == "output" || key.starts_with("output.");
            let expander = if in_output {
                &mut output_expander
            } else {
                &mut expander
            };
            expander.expand(value, &origin.child(key))?;
        }
        expander.secrets.append(&mut output_expander.secrets);
    } else {
        expander.expand(&mut from_file, &origin)?;
    }
    let from_file = nest_dotted_keys(from_file);

    let mut figment = Figment::new().merge(Layer::new(file_name.clone(), from_file));
    for (name, value) in &options.env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key
            .to_ascii_lowercase()
            .split(ENV_SEPARATOR)
            .collect::<Vec<_>>()
            .join(".");
        let source = format!("environment variable {name}");
        let parsed = parse_scalar(value, &Origin::named(&source).child(&key))?;
        let nested = nest(&key, parsed, &Origin::named(&source))?;
        figment = figment.merge(Layer::new(source, nested));
    }
    for flag in &options.overrides {
        let source = format!("-E {flag}");
        let Some((key, value)) = flag.split_once('=') else {
            return Err(Origin::named(source).error("expected -E key=value"));
        };
        let key = key.trim();
        let mut parsed = parse_scalar(value, &Origin::named(&source).child(key))?;
        expander.expand(&mut parsed, &Origin::named(&source).child(key))?;
        let nested = nest(key, parsed, &Origin::named(&source))?;
        figment = figment.merge(Layer::new(source, nested));
    }

    let secrets = &expander.secrets;
    let fail = |error| {
        let mut error = figment_error(error, &file_name);
        error.reason = super::export::redact_text(&error.reason, secrets);
        error
    };
    let merged: Value = figment.extract().map_err(fail)?;
    let settings: Settings = figment.extract().map_err(fail)?;
    check_paths(&settings, &figment, &file_name)?;
    let paths = resolve_paths(&settings, &file, &options.cwd);
    Ok(LoadedConfig {
        file,
        settings,
        merged,
        paths,
        secrets: expander.secrets,
        env: variables,
    })
}

impl LoadedConfig {
    /// Every module entry: inline (`threatbeat.modules`, `filebeat.modules`)
    /// then each `threatbeat.config.modules.path` file, in name order.
    pub fn module_entries(&self) -> Result<Vec<ModuleEntry>, ConfigError> {
        let mut entries = self.inline_module_entries()?;
        for file in self.module_files()? {
            entries.extend(self.module_file_entries(&file)?);
        }
        Ok(entries)
    }

    /// The module entries written in the main file (`threatbeat.modules`, `filebeat.modules`).
    pub fn inline_module_entries(&self) -> Result<Vec<ModuleEntry>, ConfigError> {
        let main = Origin::file(&self.file);
        let mut entries = parse_module_list(
            &self.settings.threatbeat.modules,
            &main.child("threatbeat.modules"),
        )?;
        entries.extend(parse_module_list(
            &self.settings.filebeat.modules,
            &main.child("filebeat.modules"),
        )?);
        Ok(entries)
    }

    /// The module entries of one modules.d file, `${VAR}` expanded (keystore first, then environment).
    pub fn module_file_entries(&self, file: &Path) -> Result<Vec<ModuleEntry>, ConfigError> {
        let origin = Origin::file(file);
        let text = fs::read_to_string(file).map_err(|error| origin.error(format!("cannot read: {error}")))?;
        let mut value = parse_yaml(&text, &origin)?;
        check_dotted_keys(&value, &origin)?;
        let mut expander = Expander::new(&self.env).naming_keystore(&Keystore::path_in(&self.paths.data));
        expander.expand(&mut value, &origin)?;
        parse_module_list(&value, &origin)
    }

    /// Every value to mask in messages: secrets expanded into the main file,
    /// keystore values, and variables whose name looks secret (which module
    /// files may reference).
    pub fn known_secrets(&self) -> Vec<String> {
        let mut secrets = self.secrets.clone();
        secrets.extend(
            self.env
                .iter()
                .filter(|(name, value)| super::expand::looks_secret(name) && !value.is_empty())
                .map(|(_, value)| value.clone()),
        );
        secrets
    }

    /// What `${VAR}` reads: the keystore's entries over the process environment.
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The enabled module files, sorted by name.
    pub fn module_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let pattern = self.modules_glob();
        let origin = Origin::file(&self.file).child("threatbeat.config.modules.path");
        let matches = glob::glob(&pattern.display().to_string())
            .map_err(|error| origin.error(format!("invalid pattern `{}`: {error}", pattern.display())))?;
        let mut files: Vec<PathBuf> = matches
            .filter_map(Result::ok)
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    /// `threatbeat.config.modules.path` made absolute.
    pub fn modules_glob(&self) -> PathBuf {
        let raw = &self.settings.threatbeat.config.modules.path;
        let substituted = PathBuf::from(self.paths.substitute(raw));
        if substituted.is_absolute() {
            substituted
        } else {
            self.paths.config.join(substituted)
        }
    }
}

/// Refuses a `path.*` no file can have (a NUL byte), naming where it was set:
/// otherwise the first file opened under it (the keystore) fails without a source.
fn check_paths(settings: &Settings, figment: &Figment, main_file: &str) -> Result<(), ConfigError> {
    let path = &settings.path;
    let set = [
        ("path.home", &path.home),
        ("path.config", &path.config),
        ("path.data", &path.data),
        ("path.logs", &path.logs),
    ];
    for (key, value) in set {
        if value
            .as_deref()
            .is_some_and(|value| value.as_os_str().as_encoded_bytes().contains(&0))
        {
            let source = figment
                .find_metadata(key)
                .map_or_else(|| main_file.to_owned(), |metadata| metadata.name.to_string());
            return Err(Origin::named(source)
                .child(key)
                .error("contains a NUL byte, which no path can hold"));
        }
    }
    Ok(())
}

fn resolve_paths(settings: &Settings, file: &Path, cwd: &Path) -> Paths {
    let file_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let absolute = |base: &Path, path: &Path| {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        }
    };
    let home = settings
        .path
        .home
        .as_deref()
        .map(|home| absolute(&file_dir, home))
        .unwrap_or_else(|| file_dir.clone());
    let config = settings
        .path
        .config
        .as_deref()
        .map(|config| absolute(&home, config))
        .unwrap_or_else(|| file_dir.clone());
    let data = settings
        .path
        .data
        .as_deref()
        .map(|data| absolute(&home, data))
        .unwrap_or_else(|| home.join("data"));
    let logs = settings
        .path
        .logs
        .as_deref()
        .map(|logs| absolute(&home, logs))
        .unwrap_or_else(|| home.join("logs"));
    Paths {
        home: normalize(home),
        config: normalize(config),
        data: normalize(data),
        logs: normalize(logs),
    }
}

/// Removes `.` and `..` segments without touching the file system.
pub fn normalize(path: PathBuf) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}

/// A value as YAML reads a scalar: `true`, `10`, `[a, b]`, or text.
fn parse_scalar(text: &str, origin: &Origin) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::String(String::new()));
    }
    parse_yaml(text, origin).or_else(|_| Ok(Value::String(text.to_owned())))
}

/// `a.b.c` and `value` as `{"a": {"b": {"c": value}}}` (an `-E` flag or an
/// environment variable from `source`).
fn nest(key: &str, value: Value, source: &Origin) -> Result<Value, ConfigError> {
    let mut single = Map::new();
    single.insert(key.to_owned(), value);
    let single = Value::Object(single);
    check_dotted_keys(&single, source).map_err(|mut error| {
        // The source quotes the whole flag or variable name: not megabytes of it.
        const SHOWN: usize = 80;
        if error.file.chars().nth(SHOWN).is_some() {
            error.file = format!("{}…", error.file.chars().take(SHOWN).collect::<String>());
        }
        error
    })?;
    Ok(threatbeat_core::nest_dotted_keys(single, NullKeys::Keep))
}

/// Expands dotted keys (`output.file.path: x`) into nested maps, as Beats
/// does; `key:` with no value is dropped (unset).
pub fn nest_dotted_keys(value: Value) -> Value {
    threatbeat_core::nest_dotted_keys(value, NullKeys::Drop)
}

/// One configuration source, named for error messages.
struct Layer {
    name: String,
    value: Value,
}

impl Layer {
    fn new(name: String, value: Value) -> Self {
        Self { name, value }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<FigmentMap<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.value).data()
    }
}

/// Turns a figment error into one naming the source, the full key and why.
fn figment_error(error: figment::Error, main_file: &str) -> ConfigError {
    let error = error
        .into_iter()
        .next()
        .unwrap_or_else(|| figment::Error::from("unknown error".to_owned()));
    let mut key = error.path.join(".");
    let mut reason = error.kind.to_string();
    match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            if error.path.last() != Some(field) {
                key = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
            }
            reason = format!(
                "unknown field `{field}`; expected one of: {}",
                expected.join(", ")
            );
        }
        // The message would quote the value: not for a secret.
        figment::error::Kind::InvalidType(_, expected) if super::expand::looks_secret(&key) => {
            reason =
                format!("invalid type, expected {expected} (the value is not shown: the key holds a secret)");
        }
        _ => {}
    }
    let file = error
        .metadata
        .as_ref()
        .map(|metadata| metadata.name.to_string())
        .unwrap_or_else(|| main_file.to_owned());
    ConfigError { file, key, reason }
}

#[cfg(test)]
mod output_secret_tests {
    use super::*;

    #[test]
    fn without_output_leaves_only_output_secrets_unresolved() {
        let dir = tempfile::tempdir().unwrap();
        let options = |main: &str| {
            fs::write(dir.path().join("threatbeat.yml"), main).unwrap();
            LoadOptions {
                config_file: None,
                overrides: Vec::new(),
                env: BTreeMap::new(),
                cwd: dir.path().to_path_buf(),
            }
        };
        for main in [
            "output.elasticsearch:\n  hosts: [\"https://es:9200\"]\n  api_key: ${ES_API_KEY}\n",
            "output.elasticsearch.api_key: ${ES_API_KEY}\n",
        ] {
            let error = load(&options(main)).unwrap_err();
            assert!(
                error.reason.contains("`ES_API_KEY` is not set"),
                "{}",
                error.reason
            );
            let config = load_without_output(&options(main)).unwrap();
            assert!(
                config.merged.to_string().contains("\"api_key\":\"\""),
                "{}",
                config.merged
            );
        }
        // Elsewhere in the main file an unset variable still fails.
        let error =
            load_without_output(&options("output.console: {}\nlogging.level: ${LEVEL}\n")).unwrap_err();
        assert_eq!(error.key, "logging.level");
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn a_path_with_a_nul_byte_is_refused_naming_where_it_was_set() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("threatbeat.yml");
        let options = |overrides: Vec<String>| LoadOptions {
            config_file: None,
            overrides,
            env: BTreeMap::new(),
            cwd: dir.path().to_path_buf(),
        };
        // Set by a flag: the flag is named (proptest found this one: the
        // keystore under it failed with no source).
        fs::write(&main, "output.console: {}\n").unwrap();
        let error = load(&options(vec!["path.data=\0".into()])).unwrap_err();
        assert_eq!(error.key, "path.data", "{error}");
        assert!(error.file.contains("-E"), "{error}");
        assert!(error.reason.contains("NUL"), "{error}");
        // Set in the file: the file is named.
        fs::write(&main, "output.console: {}\npath.logs: \"a\\0b\"\n").unwrap();
        let error = load(&options(Vec::new())).unwrap_err();
        assert_eq!(error.key, "path.logs", "{error}");
        assert!(error.file.ends_with("threatbeat.yml"), "{error}");
    }
}
