//! Fileset definitions: a `manifest.yml` (vars, inputs, index) and an
//! optional `processors.yml`, either embedded in the binary or read from
//! `<path.config>/modules.d/definitions/<module>/<fileset>/`.
//!
//! A manifest may start from another definition (`extends: module/fileset`):
//! the other manifest with this one deep-merged over it, and its processors
//! unless this fileset brings its own. Definitions are parsed one by one,
//! then linked ([`Definitions::link`]) once every one is known, so that a
//! user's override of a definition others extend or borrow from applies to
//! them too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use threatbeat_core::{deep_merge, deserialize_at, ConfigError, Origin};

/// The files of one built-in definition, embedded at build time.
pub(crate) struct BuiltinFiles {
    pub module: &'static str,
    pub fileset: &'static str,
    pub manifest: &'static str,
    pub processors: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/builtin_definitions.rs"));

/// Where built-in definitions live in the source tree (shown in error messages).
pub const BUILTIN_DEFINITIONS_DIR: &str = "modules.d/definitions";

/// The parsed `manifest.yml` of a fileset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The module name; must match the folder.
    pub module: String,
    /// The fileset name; must match the folder.
    pub fileset: String,
    /// One line for `modules list`.
    #[serde(default)]
    pub description: String,
    /// The declared variables and their defaults. Only these may be overridden.
    #[serde(default)]
    pub var: Map<String, Value>,
    /// One entry per supported input type; `var.input` picks one. Required
    /// (non-empty) once `extends` is applied.
    #[serde(default)]
    pub input: Map<String, Value>,
    /// The target index (`@metadata.index`) when the events do not set one.
    #[serde(default)]
    pub index: Option<String>,
    /// The current-state index the agent maintains for the fileset's
    /// indicators (see `agent/src/lifecycle`); templated like the rest.
    #[serde(default)]
    pub current_state: Value,
    /// `module/fileset` whose `processors.yml` this fileset runs, templated
    /// with this fileset's own vars (instead of a `processors.yml` of its own).
    #[serde(default)]
    pub processors_from: Option<String>,
    /// `module/fileset` whose definition this one starts from: that manifest
    /// with this one deep-merged over it (maps key by key, anything else
    /// replaced), and its processors unless this fileset has a
    /// `processors.yml` or a `processors_from` of its own.
    #[serde(default)]
    pub extends: Option<String>,
}

/// A definition's files as written, before `extends` and `processors_from`
/// are applied; kept so that linking again (after user definitions are
/// added) starts over from them.
#[derive(Debug, Clone, PartialEq)]
struct OwnFiles {
    /// The manifest as parsed from its own file.
    manifest: Manifest,
    /// The same manifest as a JSON map: only the keys the file sets, which
    /// is what a child merges over its parent.
    raw: Map<String, Value>,
    /// Where the manifest was read.
    manifest_origin: Origin,
    /// The own `processors.yml`, if there is one.
    processors: Option<Value>,
    /// Where the own `processors.yml` is (or would be).
    processors_origin: Origin,
}

/// One fileset definition, not yet templated.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesetDefinition {
    /// The module (`threatintel`).
    pub module: String,
    /// The fileset (`misp`).
    pub fileset: String,
    /// The parsed manifest, with its templates still in place (and, once
    /// linked, with the definitions it `extends` merged in).
    pub manifest: Manifest,
    /// Where the manifest was read; for a fileset that `extends` another, the
    /// file name says so, as the key may come from the other's manifest.
    pub manifest_origin: Origin,
    /// The raw processors list (`Value::Null` when there is none): the own
    /// `processors.yml`, else (once linked) the one named by
    /// `processors_from` or inherited through `extends`.
    pub processors: Value,
    /// Where the processors list was read.
    pub processors_origin: Origin,
    /// Whether the definition ships with the binary.
    pub builtin: bool,
    /// The files as written, for linking again.
    own: OwnFiles,
}

impl FilesetDefinition {
    /// The pipeline id, `module/fileset`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.module, self.fileset)
    }

    /// Parses a definition from the text of its files. `manifest_origin` and
    /// `processors_origin` name the files in errors.
    pub fn parse(
        module: &str,
        fileset: &str,
        manifest_text: &str,
        manifest_origin: Origin,
        processors_text: Option<&str>,
        processors_origin: Origin,
    ) -> Result<Self, ConfigError> {
        let raw = match parse_yaml(manifest_text, &manifest_origin)? {
            Value::Object(raw) => raw,
            _ => return Err(manifest_origin.error("manifest.yml must hold a YAML map")),
        };
        let manifest: Manifest = deserialize_at(&Value::Object(raw.clone()), &manifest_origin)?;
        if manifest.module != module {
            return Err(manifest_origin.child("module").error(format!(
                "the manifest says module `{}` but sits in the folder of module `{module}`",
                manifest.module
            )));
        }
        if manifest.fileset != fileset {
            return Err(manifest_origin.child("fileset").error(format!(
                "the manifest says fileset `{}` but sits in the folder of fileset `{fileset}`",
                manifest.fileset
            )));
        }
        if let Some(parent) = &manifest.extends {
            if split_id(parent).is_none() {
                return Err(manifest_origin
                    .child("extends")
                    .error(format!("`{parent}` is not a `module/fileset` name")));
            }
        } else if manifest.input.is_empty() {
            return Err(manifest_origin
                .child("input")
                .error("a fileset needs at least one input"));
        }
        if let Some(source) = &manifest.processors_from {
            let origin = manifest_origin.child("processors_from");
            if split_id(source).is_none() {
                return Err(origin.error(format!("`{source}` is not a `module/fileset` name")));
            }
            if processors_text.is_some() {
                return Err(origin.error(format!(
                    "the fileset runs the processors of `{source}`, so it cannot have a processors.yml of its own ({})",
                    processors_origin.file
                )));
            }
        }
        let processors = match processors_text {
            Some(text) => parse_yaml(text, &processors_origin)?,
            None => Value::Null,
        };
        if !matches!(processors, Value::Null | Value::Array(_)) {
            return Err(processors_origin.error("processors.yml must hold a YAML list of processors"));
        }
        let own = OwnFiles {
            manifest: manifest.clone(),
            raw,
            manifest_origin: manifest_origin.clone(),
            processors: processors_text.map(|_| processors.clone()),
            processors_origin: processors_origin.clone(),
        };
        Ok(Self {
            module: module.to_owned(),
            fileset: fileset.to_owned(),
            manifest,
            manifest_origin,
            processors,
            processors_origin,
            builtin: false,
            own,
        })
    }
}

/// Parses YAML text into JSON, naming the file and line on failure.
pub fn parse_yaml(text: &str, origin: &Origin) -> Result<Value, ConfigError> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|error| {
        let at = error
            .location()
            .map(|location| format!(" at line {}, column {}", location.line(), location.column()))
            .unwrap_or_default();
        origin.error(format!("invalid YAML{at}: {error}"))
    })?;
    yaml_to_json(yaml, origin)
}

/// Converts YAML to JSON. Map keys must be strings (numbers and booleans are
/// written as text, as YAML users expect); tagged values lose their tag.
pub fn yaml_to_json(yaml: serde_yaml::Value, origin: &Origin) -> Result<Value, ConfigError> {
    Ok(match yaml {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(value) => Value::Bool(value),
        serde_yaml::Value::Number(number) => {
            if let Some(value) = number.as_i64() {
                Value::from(value)
            } else if let Some(value) = number.as_u64() {
                Value::from(value)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| origin.error(format!("number {number} cannot be represented")))?
            }
        }
        serde_yaml::Value::String(text) => Value::String(text),
        serde_yaml::Value::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(position, item)| yaml_to_json(item, &origin.child(position)))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    serde_yaml::Value::String(text) => text,
                    serde_yaml::Value::Bool(value) => value.to_string(),
                    serde_yaml::Value::Number(number) => number.to_string(),
                    other => {
                        return Err(origin.error(format!("map keys must be text, found {other:?}")));
                    }
                };
                let value = yaml_to_json(value, &origin.child(&key))?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        serde_yaml::Value::Tagged(tagged) => yaml_to_json(tagged.value, origin)?,
    })
}

/// Every known fileset definition: the built-in ones, then the user's,
/// which replace built-ins of the same `module/fileset`.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    by_id: BTreeMap<(String, String), FilesetDefinition>,
}

impl Definitions {
    /// The definitions embedded in the binary.
    pub fn builtin() -> Result<Self, ConfigError> {
        let mut definitions = Self::default();
        for files in BUILTIN_DEFINITIONS {
            let folder = format!("{BUILTIN_DEFINITIONS_DIR}/{}/{}", files.module, files.fileset);
            let mut definition = FilesetDefinition::parse(
                files.module,
                files.fileset,
                files.manifest,
                Origin::named(format!("{folder}/manifest.yml (built-in)")),
                files.processors,
                Origin::named(format!("{folder}/processors.yml (built-in)")),
            )?;
            definition.builtin = true;
            definitions.insert(definition);
        }
        definitions.link()?;
        Ok(definitions)
    }

    /// The built-in definitions plus those under `<config_path>/modules.d/definitions/`.
    pub fn load(config_path: &Path) -> Result<Self, ConfigError> {
        let mut definitions = Self::builtin()?;
        definitions.add_user_definitions(&config_path.join(BUILTIN_DEFINITIONS_DIR))?;
        Ok(definitions)
    }

    /// Adds (or replaces) definitions found under `root/<module>/<fileset>/manifest.yml`.
    pub fn add_user_definitions(&mut self, root: &Path) -> Result<(), ConfigError> {
        for module_dir in sorted_subdirs(root)? {
            for fileset_dir in sorted_subdirs(&module_dir)? {
                let manifest_path = fileset_dir.join("manifest.yml");
                if !manifest_path.is_file() {
                    continue;
                }
                let processors_path = fileset_dir.join("processors.yml");
                let manifest_text = read_text(&manifest_path)?;
                let processors_text = match processors_path.is_file() {
                    true => Some(read_text(&processors_path)?),
                    false => None,
                };
                let definition = FilesetDefinition::parse(
                    &file_name(&module_dir),
                    &file_name(&fileset_dir),
                    &manifest_text,
                    Origin::file(&manifest_path),
                    processors_text.as_deref(),
                    Origin::file(&processors_path),
                )?;
                self.insert(definition);
            }
        }
        // After every user definition is in: a user's override of a fileset
        // that others extend or borrow processors from applies to them too.
        self.link()
    }

    /// Applies `extends` and then `processors_from` to every definition, with
    /// the definitions as known now (user overrides included). Each
    /// definition starts over from its own files, so linking again after
    /// more definitions were added (or replaced) gives the same result as
    /// linking once at the end. Call it after [`Self::insert`].
    pub fn link(&mut self) -> Result<(), ConfigError> {
        let children: Vec<(String, String)> = self
            .by_id
            .iter()
            .filter(|(_, definition)| definition.own.manifest.extends.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let mut linked = Vec::with_capacity(children.len());
        for id in children {
            linked.push(self.extended(&self.by_id[&id])?);
        }
        for definition in linked {
            self.insert(definition);
        }
        self.link_borrowed_processors()
    }

    /// `definition` with the definitions it extends (nearest first) applied.
    fn extended(&self, definition: &FilesetDefinition) -> Result<FilesetDefinition, ConfigError> {
        let own = &definition.own;
        let origin = own.manifest_origin.child("extends");
        // The chain of ancestors, parent first; `seen` catches a loop.
        let mut chain: Vec<&FilesetDefinition> = Vec::new();
        let mut seen = vec![definition.id()];
        let mut current = definition;
        while let Some(parent) = &current.own.manifest.extends {
            let found = split_id(parent)
                .and_then(|(module, fileset)| self.get(module, fileset))
                .ok_or_else(|| {
                    let named_by = match chain.last() {
                        None => String::new(),
                        Some(last) => format!("`{}` (which {} extends) ", last.id(), definition.id()),
                    };
                    origin.error(format!(
                        "{named_by}names `{parent}`, which is not a known fileset (built-in or under modules.d/definitions/)"
                    ))
                })?;
            let parent_id = found.id();
            if seen.contains(&parent_id) {
                seen.push(parent_id);
                return Err(origin.error(format!(
                    "the chain of `extends` loops ({}): a definition cannot extend itself, directly or through others",
                    seen.join(" extends ")
                )));
            }
            seen.push(parent_id);
            chain.push(found);
            current = found;
        }

        // The root's manifest, then each descendant's merged over it.
        let mut raw = Map::new();
        for ancestor in chain.iter().rev() {
            deep_merge(&mut raw, &ancestor.own.raw);
        }
        deep_merge(&mut raw, &own.raw);
        // The names and the description are never inherited.
        raw.remove("description");
        for key in ["module", "fileset", "description", "extends"] {
            if let Some(value) = own.raw.get(key) {
                raw.insert(key.to_owned(), value.clone());
            }
        }
        // The processors come from the nearest definition with a
        // processors.yml or a processors_from of its own.
        raw.remove("processors_from");
        let mut processors = (Value::Null, own.processors_origin.clone());
        for level in std::iter::once(definition).chain(chain.iter().copied()) {
            if let Some(list) = &level.own.processors {
                let processors_origin = if level.id() == definition.id() {
                    level.own.processors_origin.clone()
                } else {
                    Origin {
                        file: format!(
                            "{} (extended by {})",
                            level.own.processors_origin.file,
                            definition.id()
                        ),
                        key: level.own.processors_origin.key.clone(),
                    }
                };
                processors = (list.clone(), processors_origin);
                break;
            }
            if let Some(source) = &level.own.manifest.processors_from {
                raw.insert("processors_from".to_owned(), Value::String(source.clone()));
                break;
            }
        }

        let ancestors: Vec<String> = chain.iter().map(|ancestor| ancestor.id()).collect();
        let manifest_origin = Origin {
            file: format!("{} (extends {})", own.manifest_origin.file, ancestors.join(", ")),
            key: own.manifest_origin.key.clone(),
        };
        let manifest: Manifest = deserialize_at(&Value::Object(raw), &manifest_origin)?;
        if manifest.input.is_empty() {
            return Err(manifest_origin
                .child("input")
                .error("a fileset needs at least one input (none here nor in the definitions it extends)"));
        }
        let (processors, processors_origin) = processors;
        Ok(FilesetDefinition {
            manifest,
            manifest_origin,
            processors,
            processors_origin,
            ..definition.clone()
        })
    }

    /// Gives every fileset with `processors_from` the processors of the
    /// fileset it names (as known now: user overrides included). Linking
    /// again after more definitions were added re-copies them.
    fn link_borrowed_processors(&mut self) -> Result<(), ConfigError> {
        let borrowers: Vec<((String, String), String)> = self
            .by_id
            .iter()
            .filter_map(|(id, definition)| {
                definition
                    .manifest
                    .processors_from
                    .clone()
                    .map(|source| (id.clone(), source))
            })
            .collect();
        for (id, source) in borrowers {
            let borrower = &self.by_id[&id];
            let origin = borrower.manifest_origin.child("processors_from");
            let lender = split_id(&source)
                .and_then(|(module, fileset)| self.get(module, fileset))
                .ok_or_else(|| {
                    origin.error(format!(
                        "names `{source}`, which is not a known fileset (built-in or under modules.d/definitions/)"
                    ))
                })?;
            if let Some(further) = &lender.manifest.processors_from {
                return Err(origin.error(format!(
                    "`{source}` borrows its processors itself (from `{further}`); name the fileset that has the processors.yml"
                )));
            }
            let processors = lender.processors.clone();
            let processors_origin = Origin {
                file: format!(
                    "{} (processors_from of {})",
                    lender.processors_origin.file,
                    borrower.id()
                ),
                key: lender.processors_origin.key.clone(),
            };
            if let Some(borrower) = self.by_id.get_mut(&id) {
                borrower.processors = processors;
                borrower.processors_origin = processors_origin;
            }
        }
        Ok(())
    }

    /// Adds or replaces one definition; [`Self::link`] applies `extends`
    /// and `processors_from` afterwards.
    pub fn insert(&mut self, definition: FilesetDefinition) {
        self.by_id.insert(
            (definition.module.clone(), definition.fileset.clone()),
            definition,
        );
    }

    /// The definition of `module/fileset`.
    pub fn get(&self, module: &str, fileset: &str) -> Option<&FilesetDefinition> {
        self.by_id.get(&(module.to_owned(), fileset.to_owned()))
    }

    /// The known module names, sorted.
    pub fn modules(&self) -> BTreeSet<&str> {
        self.by_id.keys().map(|(module, _)| module.as_str()).collect()
    }

    /// The filesets of `module`, sorted.
    pub fn filesets(&self, module: &str) -> Vec<&FilesetDefinition> {
        self.by_id
            .values()
            .filter(|definition| definition.module == module)
            .collect()
    }

    /// Every definition, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &FilesetDefinition> {
        self.by_id.values()
    }
}

/// The built-in definition of `module/fileset`, if one ships with the binary.
pub fn builtin_definition(module: &str, fileset: &str) -> Option<FilesetDefinition> {
    match Definitions::builtin() {
        Ok(definitions) => definitions.get(module, fileset).cloned(),
        Err(error) => {
            tracing::error!(%error, "a built-in module definition is invalid");
            None
        }
    }
}

/// `module/fileset` as its two names.
fn split_id(id: &str) -> Option<(&str, &str)> {
    let (module, fileset) = id.split_once('/')?;
    let valid = |name: &str| !name.is_empty() && !name.contains('/');
    (valid(module) && valid(fileset)).then_some((module, fileset))
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|error| Origin::file(path).error(format!("cannot read: {error}")))
}

fn sorted_subdirs(parent: &Path) -> Result<Vec<std::path::PathBuf>, ConfigError> {
    let read = match fs::read_dir(parent) {
        Ok(read) => read,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Origin::file(parent).error(format!("cannot list the folder: {error}"))),
    };
    let mut dirs: Vec<_> = read
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "extends_tests.rs"]
mod extends_tests;

#[cfg(test)]
mod processors_from_tests {
    use serde_json::{json, Map};

    use super::*;
    use crate::modules::resolve;

    const LENDER: &str = "module: intel\nfileset: api\nvar:\n  tags: [api]\ninput:\n  httpjson: {}\n";
    const LENDER_PROCESSORS: &str = "- add_tags: {tags: \"{{ var.tags }}\"}\n";
    const BORROWER: &str =
        "module: intel\nfileset: feed\nprocessors_from: intel/api\nvar:\n  tags: [feed]\ninput:\n  httpjson: {}\n";

    fn write(root: &Path, fileset: &str, manifest: &str, processors: Option<&str>) {
        let folder = root.join(BUILTIN_DEFINITIONS_DIR).join("intel").join(fileset);
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join("manifest.yml"), manifest).unwrap();
        if let Some(processors) = processors {
            fs::write(folder.join("processors.yml"), processors).unwrap();
        }
    }

    fn processors_of(definitions: &Definitions, fileset: &str) -> Value {
        let definition = definitions.get("intel", fileset).unwrap();
        resolve(definition, &Map::new(), &Origin::named("test"))
            .unwrap()
            .processors
    }

    #[test]
    fn a_borrowed_processors_yml_is_templated_with_the_borrowers_vars() {
        let config = tempfile::tempdir().unwrap();
        write(config.path(), "api", LENDER, Some(LENDER_PROCESSORS));
        write(config.path(), "feed", BORROWER, None);
        let definitions = Definitions::load(config.path()).unwrap();
        assert_eq!(
            processors_of(&definitions, "feed"),
            json!([{"add_tags": {"tags": ["feed"]}}])
        );
        assert_eq!(
            processors_of(&definitions, "api"),
            json!([{"add_tags": {"tags": ["api"]}}])
        );
        let origin = &definitions.get("intel", "feed").unwrap().processors_origin;
        assert!(
            origin.file.contains("api") && origin.file.contains("processors_from of intel/feed"),
            "{origin:?}"
        );
    }

    #[test]
    fn a_user_override_of_the_lender_applies_to_the_borrower() {
        let config = tempfile::tempdir().unwrap();
        let misp_feed = builtin_definition("threatintel", "misp_feed").expect("misp_feed ships");
        let misp = builtin_definition("threatintel", "misp").unwrap();
        assert_eq!(
            misp_feed.processors, misp.processors,
            "the built-in borrower runs misp's processors"
        );
        let folder = config
            .path()
            .join(BUILTIN_DEFINITIONS_DIR)
            .join("threatintel/misp");
        fs::create_dir_all(&folder).unwrap();
        fs::write(
            folder.join("manifest.yml"),
            "module: threatintel\nfileset: misp\ninput:\n  httpjson: {}\n",
        )
        .unwrap();
        fs::write(folder.join("processors.yml"), "- drop_event: {}\n").unwrap();
        let definitions = Definitions::load(config.path()).unwrap();
        assert_eq!(
            definitions.get("threatintel", "misp_feed").unwrap().processors,
            json!([{"drop_event": {}}])
        );
    }

    #[test]
    fn unknown_or_borrowing_lenders_are_errors_naming_the_manifest_and_key() {
        let config = tempfile::tempdir().unwrap();
        write(
            config.path(),
            "feed",
            &BORROWER.replace("intel/api", "intel/nothing"),
            None,
        );
        let error = Definitions::load(config.path()).unwrap_err();
        assert!(error.file.ends_with("feed/manifest.yml"), "{error}");
        assert_eq!(error.key, "processors_from");
        assert!(error.reason.contains("`intel/nothing`"), "{error}");

        let config = tempfile::tempdir().unwrap();
        write(config.path(), "api", LENDER, Some(LENDER_PROCESSORS));
        write(config.path(), "feed", BORROWER, None);
        write(
            config.path(),
            "mirror",
            &BORROWER
                .replace("fileset: feed", "fileset: mirror")
                .replace("intel/api", "intel/feed"),
            None,
        );
        let error = Definitions::load(config.path()).unwrap_err();
        assert!(error.file.ends_with("mirror/manifest.yml"), "{error}");
        assert!(error.reason.contains("borrows its processors itself"), "{error}");

        let config = tempfile::tempdir().unwrap();
        write(config.path(), "api", LENDER, Some(LENDER_PROCESSORS));
        write(config.path(), "feed", BORROWER, Some(LENDER_PROCESSORS));
        let error = Definitions::load(config.path()).unwrap_err();
        assert_eq!(error.key, "processors_from");
        assert!(error.reason.contains("cannot have a processors.yml"), "{error}");

        let config = tempfile::tempdir().unwrap();
        write(config.path(), "feed", &BORROWER.replace("intel/api", "api"), None);
        let error = Definitions::load(config.path()).unwrap_err();
        assert!(error.reason.contains("not a `module/fileset` name"), "{error}");
    }
}
