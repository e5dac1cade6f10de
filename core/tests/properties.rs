//! Property tests of the parsers that read what users write: durations,
//! field paths and dotted config keys. Arbitrary text never panics, and
//! what is accepted means what it says.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use threatbeat_core::config::{check_dotted_keys, MAX_CONFIG_DEPTH};
use threatbeat_core::duration::{parse_duration, MAX_DURATION};
use threatbeat_core::path::MAX_SEGMENTS;
use threatbeat_core::{nest_dotted_keys, FieldPath, NullKeys, Origin, PathError};

/// Text close to a duration: digits, dots, unit letters, signs and spaces,
/// with now and then a character from anywhere.
fn duration_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(vec![
                "0", "1", "9", "30", "1.5", ".", "..", "ms", "s", "m", "h", "d", "w", "-", "+", " ", "e9",
                "99999999999999999999", "36500", "0.001",
            ])
            .prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// A unit as written and its length in seconds.
fn unit() -> impl Strategy<Value = (&'static str, f64)> {
    prop::sample::select(vec![
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
    ])
}

/// Text made of path-ish pieces: segments, dots (empty segments among
/// them) and any character.
fn path_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-z@_]{1,4}",
            3 => Just(".".to_owned()),
            1 => any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A small JSON value; maps use few distinct keys so that paths meet them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[abc]", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A config-like map whose keys are dotted (`a.b`, `a..b`, `.a`) and whose
/// values nest further maps and lists.
fn dotted_config() -> impl Strategy<Value = Value> {
    let key = prop::collection::vec(prop_oneof![3 => "[abc]", 1 => Just(String::new())], 1..5)
        .prop_map(|segments| segments.join("."));
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The largest depth of nested maps and lists in `value`.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a map anywhere outside lists still has a dotted key.
fn has_dotted_key_outside_lists(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('.') || has_dotted_key_outside_lists(item)),
        _ => false,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_owned(), other)]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_a_duration_or_an_error(text in prop_oneof![duration_like(), any::<String>()]) {
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(duration <= MAX_DURATION, "{text:?} gave {duration:?}");
        }
    }

    #[test]
    fn written_durations_mean_their_sum(parts in prop::collection::vec((0u32..100_000, unit()), 1..4)) {
        let text: String = parts.iter().map(|(number, (unit, _))| format!("{number}{unit}")).collect();
        let seconds: f64 = parts.iter().map(|(number, (_, per_unit))| f64::from(*number) * per_unit).sum();
        match parse_duration(&text) {
            Ok(duration) => {
                prop_assert!((duration.as_secs_f64() - seconds).abs() < 0.01, "{text}: {duration:?}");
            }
            Err(reason) => {
                prop_assert!(Duration::from_secs_f64(seconds) > MAX_DURATION, "{text}: {reason}");
                prop_assert!(reason.contains("100 years"), "{reason}");
            }
        }
    }

    #[test]
    fn any_text_is_a_path_or_an_error(raw in prop_oneof![path_like(), any::<String>()]) {
        let segments: Vec<&str> = raw.split('.').collect();
        match FieldPath::parse(&raw) {
            Ok(path) => {
                prop_assert_eq!(path.as_str(), raw.as_str());
                prop_assert_eq!(path.segments(), segments.as_slice());
                prop_assert!(path.segments().len() <= MAX_SEGMENTS);
                // Each suffix is the path less its first segment, down to the last.
                let mut suffix = path.clone();
                for index in 1..segments.len() {
                    suffix = suffix.strip_first().expect("more segments are left");
                    prop_assert_eq!(suffix.as_str(), segments[index..].join("."));
                }
                prop_assert!(suffix.strip_first().is_none());
            }
            Err(PathError::Empty) => prop_assert!(raw.is_empty()),
            Err(PathError::EmptySegment(_)) => prop_assert!(segments.iter().any(|segment| segment.is_empty())),
            Err(PathError::TooManySegments { count }) => {
                prop_assert_eq!(count, segments.len());
                prop_assert!(count > MAX_SEGMENTS);
            }
        }
    }

    #[test]
    fn a_set_value_is_read_back_or_refused_untouched(
        document in json_value(),
        raw in prop::collection::vec("[abc]", 1..5).prop_map(|segments| segments.join(".")),
        value in json_value(),
    ) {
        let path = FieldPath::parse(&raw).expect("segments are not empty");
        let mut map = object(document);
        let before = map.clone();
        match path.set(&mut map, value.clone()) {
            Ok(_) => prop_assert_eq!(path.get(&map), Some(&value)),
            Err(_) => prop_assert_eq!(map, before),
        }
    }

    #[test]
    fn dotted_keys_nest_without_panicking(config in dotted_config()) {
        for nulls in [NullKeys::Keep, NullKeys::Drop] {
            let nested = nest_dotted_keys(config.clone(), nulls);
            prop_assert!(!has_dotted_key_outside_lists(&nested), "{nested}");
            // Each dotted key adds at most a few levels here, never more
            // than its segments.
            prop_assert!(depth(&nested) <= depth(&config) * 4, "{config} → {nested}");
        }
        prop_assert!(check_dotted_keys(&config, &Origin::named("t.yml")).is_ok());
    }
}

#[test]
fn a_path_of_a_million_segments_is_refused_not_walked() {
    let raw = vec!["a"; 1_000_000].join(".");
    assert_eq!(
        FieldPath::parse(&raw).unwrap_err(),
        PathError::TooManySegments { count: 1_000_000 }
    );
    let longest = vec!["a"; MAX_SEGMENTS].join(".");
    let path = FieldPath::parse(&longest).unwrap();
    let mut document = Map::new();
    path.set(&mut document, json!(1)).unwrap();
    assert_eq!(path.get(&document), Some(&json!(1)));
    assert_eq!(path.remove(&mut document), Some(json!(1)));
}

#[test]
fn a_dotted_key_of_a_million_segments_is_refused_not_nested() {
    let key = vec!["a"; 1_000_000].join(".");
    let config = json!({ key.clone(): 1, "output.file.path": "/tmp" });
    let error = check_dotted_keys(&config, &Origin::named("threatbeat.yml")).unwrap_err();
    assert_eq!(error.file, "threatbeat.yml");
    assert!(
        error.reason.contains("1000000 dotted segments"),
        "{}",
        error.reason
    );
    assert!(error.to_string().len() < 300, "the key is not quoted whole");
    // Without the check the key stays as written rather than becoming a
    // million-level value that every recursive walk would overflow on.
    let nested = nest_dotted_keys(config, NullKeys::Keep);
    assert_eq!(nested["output"]["file"]["path"], json!("/tmp"));
    assert_eq!(nested[key.as_str()], json!(1));

    // Up to the limit dotted keys nest as before, counting the levels above them.
    let at_limit = vec!["a"; MAX_CONFIG_DEPTH - 1].join(".");
    let config = json!({"top": { at_limit.clone(): 1 }});
    assert!(check_dotted_keys(&config, &Origin::named("t.yml")).is_ok());
    let nested = nest_dotted_keys(config, NullKeys::Keep);
    assert_eq!(depth(&nested), MAX_CONFIG_DEPTH);
    let one_more = json!({"top": { format!("{at_limit}.a"): 1 }});
    let error = check_dotted_keys(&one_more, &Origin::named("t.yml")).unwrap_err();
    assert_eq!(error.key, "top");
}
