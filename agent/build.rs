//! Embeds the built-in module definitions (`modules.d/definitions/<module>/<fileset>/`)
//! into the binary: writes a table of `include_str!` entries to `$OUT_DIR`, so a
//! new definition folder needs no Rust edit.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let definitions = manifest_dir.join("../modules.d/definitions");
    println!("cargo:rerun-if-changed={}", definitions.display());

    let mut entries = Vec::new();
    for module in sorted_dirs(&definitions) {
        for fileset in sorted_dirs(&module) {
            let manifest = fileset.join("manifest.yml");
            if !manifest.is_file() {
                continue;
            }
            let processors = fileset.join("processors.yml");
            entries.push((
                name_of(&module),
                name_of(&fileset),
                manifest.canonicalize().expect("manifest path resolves"),
                processors
                    .is_file()
                    .then(|| processors.canonicalize().expect("processors path resolves")),
            ));
        }
    }

    let mut table = String::from("pub(crate) static BUILTIN_DEFINITIONS: &[BuiltinFiles] = &[\n");
    for (module, fileset, manifest, processors) in entries {
        let processors = match processors {
            Some(path) => format!("Some(include_str!({:?}))", path.display().to_string()),
            None => "None".to_owned(),
        };
        writeln!(
            table,
            "    BuiltinFiles {{ module: {module:?}, fileset: {fileset:?}, manifest: include_str!({:?}), processors: {processors} }},",
            manifest.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("builtin_definitions.rs"), table).expect("OUT_DIR is writable");
}

fn sorted_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(read) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .expect("a directory entry has a name")
        .to_string_lossy()
        .into_owned()
}
