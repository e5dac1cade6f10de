//! `docs/processors.md` documents every registered processor with an
//! example, and every example builds.

use serde_json::Value;
use threatbeat_core::{BuildContext, Origin};
use threatbeat_processors::{registry, Chain};

const DOC: &str = include_str!("../../docs/processors.md");

fn yaml_blocks() -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in DOC.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some((number + 1, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_example_builds_and_every_processor_has_one() {
    let mut used = std::collections::BTreeSet::new();
    for (line, text) in yaml_blocks() {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("line {line}: {e}"));
        let list: Value = serde_json::to_value(yaml).unwrap();
        let origin = Origin::named(format!("docs/processors.md line {line}"));
        Chain::build(&list, &origin, &BuildContext::default()).unwrap_or_else(|e| panic!("{e}"));
        for item in list.as_array().unwrap() {
            used.extend(item.as_object().unwrap().keys().cloned());
        }
    }
    for name in registry().names() {
        assert!(
            used.contains(name),
            "docs/processors.md has no example of `{name}`"
        );
        assert!(
            DOC.contains(&format!("`{name}`")),
            "docs/processors.md has no section on `{name}`"
        );
    }
}
