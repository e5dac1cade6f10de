//! Property tests of the config loader: whatever text the main file, a
//! modules.d file, a `-E` flag or a `THREATBEAT_*` variable holds, loading
//! ends in settings or in an error naming where the problem is, never in a
//! panic or a stack overflow.

use std::collections::BTreeMap;
use std::fs;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tempfile::TempDir;
use threatbeat::config::{load, LoadOptions, LoadedConfig};
use threatbeat_core::ConfigError;

/// YAML-ish text: the tokens YAML gives meaning to (indentation, flow
/// collections, anchors, tags, block scalars), config keys, `${VAR}`
/// references and awkward numbers, in any order.
fn yaml_soup() -> impl Strategy<Value = String> {
    let tokens = vec![
        "logging",
        "level",
        "debug",
        "path",
        "data",
        "home",
        "output",
        "file",
        "threatbeat",
        "modules",
        "config",
        "queue",
        "http",
        "enabled",
        "port",
        "setup",
        "processors",
        "module",
        "misp",
        ".",
        ": ",
        ":",
        "\n",
        "\n  ",
        "\n    ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "&a ",
        "*a",
        "<<: *a",
        "!!str ",
        "!!binary ",
        "!custom ",
        "|\n  ",
        ">-\n  ",
        "'",
        "\"",
        "# ",
        "${X}",
        "${X:d}",
        "${UNSET}",
        "$${",
        "${",
        "~",
        "null",
        "true",
        "yes",
        "1e999",
        "-0",
        "0x1F",
        "99999999999999999999999",
        "-1",
        "1.5",
        "---\n",
        "...\n",
        "? ",
        "\t",
        "\u{feff}",
        "é",
    ];
    prop::collection::vec(
        prop_oneof![
            9 => prop::sample::select(tokens).prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

/// A value for a settings key: right or wrong type, `${VAR}`s, nested maps.
fn setting_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "debug",
            "warn",
            "loud",
            "30s",
            "1h30m",
            "-1s",
            "99999999999d",
            "0",
            "data",
            "state/x",
            "${X}",
            "${X:fallback}",
            "${UNSET}",
            "${path.data}/q",
            "$${literal}",
            "${",
            "true",
            "",
        ])
        .prop_map(|text| Value::String(text.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "level", "json", "enabled", "port", "path", "module", "a.b", "x"
                ]),
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(
                map.into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect()
            )),
        ]
    })
}

/// The settings keys (dotted as users write them) with values they accept.
fn known_settings() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "logging.level",
            vec![json!("debug"), json!("warn"), json!("error")],
        ),
        ("logging.json", vec![json!(true), json!("false")]),
        ("logging.files.keepfiles", vec![json!(3)]),
        ("logging", vec![json!({"level": "info", "to_stderr": true})]),
        ("path.home", vec![json!("home"), json!("${X:home}")]),
        ("path.data", vec![json!("state"), json!("${X}/data")]),
        ("path", vec![json!({"logs": "logs", "config": "."})]),
        ("output.file.path", vec![json!("/tmp/out")]),
        (
            "output.elasticsearch",
            vec![json!({"hosts": ["http://127.0.0.1:9200"]})],
        ),
        ("queue.mem.events", vec![json!(4096)]),
        ("http.port", vec![json!(5066), json!(0)]),
        ("http", vec![json!({"enabled": true, "max_queue_age": "10m"})]),
        (
            "threatbeat.modules",
            vec![json!([{"module": "threatintel", "misp.enabled": true, "misp.var.url": "x"}])],
        ),
        (
            "filebeat.modules",
            vec![json!([{"module": "threatintel", "abuseurl": {"var": {"interval": "10m"}}}])],
        ),
        (
            "threatbeat.config.modules.reload.period",
            vec![json!("10s"), json!(30)],
        ),
        ("threatbeat.shutdown_timeout", vec![json!("5s")]),
        ("setup.ilm.enabled", vec![json!(false)]),
        (
            "processors",
            vec![json!([{"add_fields": {"fields": {"a.b": 1}}}])],
        ),
    ]
}

/// A main config: known keys, mostly with values they accept, sometimes
/// with anything; now and then a key that is no setting.
fn settings_document() -> impl Strategy<Value = Value> {
    let known = prop::sample::select(known_settings()).prop_flat_map(|(key, accepted)| {
        (
            Just(key.to_owned()),
            prop_oneof![4 => prop::sample::select(accepted), 1 => setting_value()],
        )
    });
    let odd = (
        prop::sample::select(vec!["unknown.key", "a..b", ".", "logging.", "http.port.x"])
            .prop_map(str::to_owned),
        setting_value(),
    );
    prop::collection::vec(prop_oneof![12 => known, 1 => odd], 0..6)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

/// A flag or variable: mostly a known key with a value it accepts, now and
/// then an odd key (dotted, empty) or any text.
fn override_pair() -> impl Strategy<Value = (String, String)> {
    let known = prop::sample::select(vec![
        ("logging.level", "debug"),
        ("logging.json", "true"),
        ("http.port", "5067"),
        ("path.data", "elsewhere"),
        ("threatbeat.modules", "[{module: threatintel}]"),
    ])
    .prop_map(|(key, value)| (key.to_owned(), value.to_owned()));
    let odd = (
        prop::sample::select(vec![
            "logging.level",
            "path.data",
            "http.port",
            "a..b",
            "",
            " ",
            "x.y.z",
            "processors",
        ]),
        prop_oneof![yaml_soup(), any::<String>()],
    )
        .prop_map(|(key, value)| (key.to_owned(), value));
    prop_oneof![6 => known, 1 => odd]
}

/// A directory holding `main` as its `threatbeat.yml`.
struct Home {
    dir: TempDir,
}

impl Home {
    fn new(main: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::write(dir.path().join("threatbeat.yml"), main).expect("the main file is written");
        Home { dir }
    }

    fn options(&self, flags: Vec<String>, env: BTreeMap<String, String>) -> LoadOptions {
        LoadOptions {
            config_file: None,
            overrides: flags,
            env,
            cwd: self.dir.path().to_path_buf(),
        }
    }
}

/// Loads and, when that succeeds, reads the inline module entries and a
/// modules.d file holding `module_text`: every outcome is fine but a panic,
/// and every error says something.
fn load_everything(home: &Home, options: &LoadOptions, module_text: &str) -> Result<(), ConfigError> {
    let loaded: LoadedConfig = load(options)?;
    let _ = loaded.inline_module_entries()?;
    let module_file = home.dir.path().join("module.yml");
    fs::write(&module_file, module_text).expect("the module file is written");
    let _ = loaded.module_file_entries(&module_file)?;
    Ok(())
}

fn variables() -> BTreeMap<String, String> {
    BTreeMap::from([("X".to_owned(), "value-of-x".to_owned())])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_text_loads_or_is_refused(
        main in prop_oneof![yaml_soup(), any::<String>()],
        module in prop_oneof![yaml_soup(), any::<String>()],
    ) {
        let home = Home::new(&main);
        if let Err(error) = load_everything(&home, &home.options(Vec::new(), variables()), &module) {
            prop_assert!(!error.reason.is_empty(), "{main:?}");
            prop_assert!(!error.file.is_empty(), "the source is named: {error}");
        }
    }

    #[test]
    fn settings_of_any_shape_load_or_are_refused(
        document in settings_document(),
        module in settings_document(),
        flags in prop::collection::vec(override_pair(), 0..3),
        env in prop::collection::vec(override_pair(), 0..3),
    ) {
        let main = serde_yaml::to_string(&document).expect("JSON is YAML");
        let home = Home::new(&main);
        let flags = flags.into_iter().map(|(key, value)| format!("{key}={value}")).collect();
        let mut variables = variables();
        variables.extend(env.into_iter().map(|(key, value)| {
            (format!("THREATBEAT_{}", key.to_ascii_uppercase().replace('.', "__")), value)
        }));
        let module = serde_yaml::to_string(&Value::Array(vec![module])).expect("JSON is YAML");
        if let Err(error) = load_everything(&home, &home.options(flags, variables), &module) {
            prop_assert!(!error.reason.is_empty(), "{main}");
            prop_assert!(!error.file.is_empty(), "the source is named: {error}");
        }
    }
}

/// A key of `count` segments.
fn dotted_key(count: usize) -> String {
    vec!["a"; count].join(".")
}

#[test]
fn a_key_of_a_million_segments_is_refused_wherever_it_is_written() {
    let long = dotted_key(1_000_000);
    // YAML allows plain keys of up to 1024 characters; `? ` writes a longer one.
    let home = Home::new(&format!("? {long}\n: 1\n"));
    let error = load(&home.options(Vec::new(), BTreeMap::new())).unwrap_err();
    assert!(error.file.ends_with("threatbeat.yml"), "{error}");
    assert!(
        error.reason.contains("1000000 dotted segments"),
        "{}",
        error.reason
    );
    assert!(error.to_string().len() < 400, "the key is not quoted whole");

    let home = Home::new("logging.level: info\n");
    let error = load(&home.options(vec![format!("{long}=1")], BTreeMap::new())).unwrap_err();
    assert!(error.file.starts_with("-E a.a.a"), "{}", error.file);
    assert!(
        error.reason.contains("1000000 dotted segments"),
        "{}",
        error.reason
    );
    assert!(error.to_string().len() < 400, "the flag is not quoted whole");

    let variable = format!("THREATBEAT_{}", vec!["A"; 1_000_000].join("__"));
    let error = load(&home.options(Vec::new(), BTreeMap::from([(variable, "1".to_owned())]))).unwrap_err();
    assert!(
        error.file.starts_with("environment variable THREATBEAT_A__A"),
        "{}",
        error.file
    );
    assert!(
        error.reason.contains("1000000 dotted segments"),
        "{}",
        error.reason
    );
    assert!(error.to_string().len() < 400, "the variable is not quoted whole");

    // Nested maps count too: the limit is on the depth the keys make.
    let mut nested = Map::new();
    nested.insert(dotted_key(100), Value::from(1));
    let document = Value::Object(Map::from_iter([(dotted_key(100), Value::Object(nested))]));
    let home = Home::new(&serde_yaml::to_string(&document).unwrap());
    let error = load(&home.options(Vec::new(), BTreeMap::new())).unwrap_err();
    assert!(
        error.reason.contains("deeper than 128 levels"),
        "{}",
        error.reason
    );
}

#[test]
fn a_module_file_with_a_million_segment_key_is_an_error_not_a_crash() {
    let home = Home::new("logging.level: info\n");
    let loaded = load(&home.options(Vec::new(), BTreeMap::new())).unwrap();
    let module_file = home.dir.path().join("module.yml");
    let long = dotted_key(1_000_000);
    // `f.input.a.a…` is nested by the entry parser, `f: {a.a…}` by the input's.
    for text in [
        format!("- module: m\n  ? f.input.{long}\n  : 1\n"),
        format!("- module: m\n  f:\n    ? {long}\n    : 1\n"),
    ] {
        fs::write(&module_file, text).unwrap();
        let error = loaded.module_file_entries(&module_file).unwrap_err();
        assert!(error.file.ends_with("module.yml"), "{error}");
        assert!(error.reason.contains("dotted segments"), "{}", error.reason);
        assert!(error.to_string().len() < 400, "the key is not quoted whole");
    }
}
