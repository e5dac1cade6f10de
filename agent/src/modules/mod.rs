//! The module loader: fileset definitions (built-in and user), module
//! entries with `var.*` overrides, and their resolution into pipelines.
//! The format is described in `docs/modules.md`.

mod definition;
mod entries;
mod instances;
mod resolve;
mod template;

pub use definition::{
    builtin_definition, parse_yaml, yaml_to_json, Definitions, FilesetDefinition, Manifest,
    BUILTIN_DEFINITIONS_DIR,
};
pub use entries::{parse_module_list, resolve_entries, FilesetEntry, ModuleEntry};
pub use instances::{assign_pipeline_ids, SOURCE_VARS};
pub use resolve::{resolve, ResolvedFileset};
pub use template::Templater;

#[cfg(test)]
mod tests;
