//! Property tests of everything an input does to bytes from outside: JSON
//! and NDJSON decoding, CSV, plain lines, splits and the httpjson templates.
//! Arbitrary input never panics; where a limit exists (`max_row_bytes`,
//! `max_line_bytes`) nothing longer than it is produced, and nothing the
//! decoders return is larger than what came in.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use threatbeat_core::{Event, Origin};
use threatbeat_inputs::csv::{decode_csv, CsvConfig, CsvError};
use threatbeat_inputs::decode::{decode_json, decode_ndjson, DecodeError};
use threatbeat_inputs::httpjson::template::{Context, TemplateBuilder};
use threatbeat_inputs::lines::{decode_lines, LinesConfig};
use threatbeat_inputs::split::{Emitted, NestedSplit, Split, SplitConfig, SplitKind, StreamPlan};

/// Bytes that are sometimes text and sometimes not: any bytes, any string,
/// or a soup of the characters the decoders treat specially.
fn body(specials: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let soup = prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(specials).prop_map(str::to_owned),
            2 => "[a-z0-9 ]{1,4}",
            1 => any::<char>().prop_map(String::from),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat().into_bytes());
    prop_oneof![
        4 => soup,
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

/// A JSON value of a few levels, with keys from a small set so that paths meet them.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Quarters are exact in binary: they read back as written.
        any::<i32>().prop_map(|number| Value::from(f64::from(number) / 4.0)),
        "[a-z,;| ]{0,8}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c", "name", "~/"]),
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(
                map.into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect()
            )),
        ]
    })
    .boxed()
}

/// The longest an error message may be whatever the body's size: errors
/// quote a snippet, never the body.
const MAX_ERROR_TEXT: usize = 600;

const JSON_SPECIALS: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "\\", "\\u", "\\ud800", "1e999", "-0", "0.", "true", "nul", "\n",
    " ", "\u{feff}", "<", "<html>", "\u{0}",
];

const CSV_SPECIALS: &[&str] = &[
    ",", "\"", "\"\"", "\n", "\r\n", "\r", "#", "# ", " ", "a", "é", "\u{feff}", "<",
];

const LINE_SPECIALS: &[&str] = &[
    "\n", "\r\n", "\r", "#", ";", "//", " ", "\t", "1.2.3.4", "<", "\u{feff}", "\u{0}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_body_is_json_or_a_bounded_error(bytes in body(JSON_SPECIALS)) {
        match decode_json(&bytes) {
            Ok(value) => {
                // What was decoded reads back the same (floats aside: without
                // serde_json's float_roundtrip a digit string may move by one ULP).
                let again = decode_json(value.to_string().as_bytes()).expect("serde_json output is JSON");
                if !has_float(&value) {
                    prop_assert_eq!(again, value);
                }
            }
            Err(error) => {
                prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT, "{error}");
                if let DecodeError::NotUtf8 { offset } = error {
                    prop_assert!(std::str::from_utf8(&bytes[..offset]).is_ok());
                    prop_assert!(std::str::from_utf8(&bytes).is_err());
                }
            }
        }
    }

    #[test]
    fn a_cut_or_garbled_document_is_an_error_not_a_panic(
        value in json_value(),
        cut in any::<prop::sample::Index>(),
        garble in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = serde_json::to_vec(&value).expect("a value serializes");
        let whole = decode_json(&text).expect("serde_json output decodes");
        prop_assert_eq!(&whole, &value);
        // A prefix of a document is rarely a document; when it is not, the
        // decoder says so, most often as truncated.
        let prefix = &text[..cut.index(text.len() + 1)];
        if let Err(error) = decode_json(prefix) {
            prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT);
        }
        let mut garbled = text.clone();
        if !garbled.is_empty() {
            garbled[garble.index(text.len())] = byte;
        }
        if let Err(error) = decode_json(&garbled) {
            prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT);
        }
    }

    #[test]
    fn ndjson_gives_one_value_per_line_or_names_the_bad_line(bytes in body(JSON_SPECIALS)) {
        let lines: Vec<&[u8]> = bytes.split(|byte| *byte == b'\n').collect();
        match decode_ndjson(&bytes) {
            Ok(values) => {
                let filled = lines.iter().filter(|line| !line.iter().all(u8::is_ascii_whitespace)).count();
                prop_assert_eq!(values.len(), filled);
            }
            Err((line, error)) => {
                prop_assert!((1..=lines.len()).contains(&line), "line {line} of {}", lines.len());
                prop_assert_eq!(decode_json(lines[line - 1]).unwrap_err(), error);
            }
        }
    }

    #[test]
    fn any_text_as_csv_keeps_every_cell_within_the_row_limit(
        bytes in body(CSV_SPECIALS),
        header in any::<bool>(),
        comment_prefixes in prop::collection::vec(prop::sample::select(vec!["#", "", "\"", "a,"]), 0..3),
        max_row_bytes in prop_oneof![0usize..24, Just(1024 * 1024), Just(usize::MAX)],
    ) {
        let config = CsvConfig {
            max_row_bytes,
            header,
            comment_prefixes: comment_prefixes.into_iter().map(str::to_owned).collect(),
        };
        match decode_csv(&bytes, &config) {
            Ok(rows) => {
                let lines = bytes.split(|byte| *byte == b'\n').count();
                prop_assert!(rows.records.len() + rows.errors.len() <= lines);
                let mut produced = 0;
                for record in &rows.records {
                    let record = record.as_object().expect("a record is an object");
                    for (key, value) in record {
                        let value = value.as_str().expect("cells are strings");
                        prop_assert!(value.len() <= max_row_bytes, "a {}-byte cell", value.len());
                        prop_assert!(header || key.starts_with("column"));
                        if header {
                            prop_assert!(key.len() <= max_row_bytes, "a {}-byte column name", key.len());
                        }
                        produced += value.len();
                    }
                }
                // Every input byte ends in at most one cell.
                prop_assert!(produced <= bytes.len());
                for error in &rows.errors {
                    prop_assert!((1..=lines).contains(&error.line));
                    prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT);
                }
            }
            Err(CsvError::Header { line, reason }) => {
                prop_assert!(header);
                prop_assert!(line >= 1 && reason.len() <= MAX_ERROR_TEXT);
            }
            Err(error) => prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT, "{error}"),
        }
    }

    #[test]
    fn csv_written_by_the_rules_reads_back(
        table in (2usize..5).prop_flat_map(|columns| {
            prop::collection::vec(prop::collection::vec("[a-z ,\"\r\n#é]{0,6}", columns), 0..6)
        }),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        let columns = table.first().map_or(2, Vec::len);
        let names: Vec<String> = (0..columns).map(|index| format!("c{index}")).collect();
        let ending = if crlf { "\r\n" } else { "\n" };
        let mut text = names.join(",");
        for row in &table {
            text.push_str(ending);
            let cells: Vec<String> = row.iter().map(|cell| quote(cell)).collect();
            text.push_str(&cells.join(","));
        }
        if final_newline {
            text.push_str(ending);
        }
        let rows = decode_csv(text.as_bytes(), &CsvConfig::default()).expect("well-formed CSV");
        prop_assert!(rows.errors.is_empty(), "{:?} in {text:?}", rows.errors);
        let expected: Vec<Value> = table
            .iter()
            .map(|row| Value::Object(names.iter().cloned().zip(row.iter().cloned().map(Value::String)).collect()))
            .collect();
        prop_assert_eq!(rows.records, expected);
    }

    #[test]
    fn csv_rows_longer_than_the_limit_are_skipped_and_the_others_kept(
        cells in prop::collection::vec(("[a-z]{0,12}", "[a-z]{0,12}"), 1..8),
        max_row_bytes in 10usize..20,
    ) {
        // One line per row: a skipped row does not swallow its neighbours.
        let mut text = "name,value\n".to_owned();
        for (name, value) in &cells {
            text.push_str(&format!("{name},{value}\n"));
        }
        let config = CsvConfig { max_row_bytes, ..CsvConfig::default() };
        let rows = decode_csv(text.as_bytes(), &config).expect("the header fits");
        let kept: Vec<Value> = cells
            .iter()
            .filter(|(name, value)| name.len() + 1 + value.len() <= max_row_bytes)
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        prop_assert_eq!(rows.records.len() + rows.errors.len(), cells.len());
        prop_assert_eq!(rows.records, kept);
        prop_assert!(rows.errors.iter().all(|error| error.reason.contains("max_row_bytes")));
    }

    #[test]
    fn any_text_as_lines_keeps_every_record_within_the_line_limit(
        bytes in body(LINE_SPECIALS),
        comment_prefixes in prop::collection::vec(prop::sample::select(vec!["#", ";", "//", ""]), 0..3),
        max_line_bytes in prop_oneof![0usize..24, Just(64 * 1024), Just(usize::MAX)],
    ) {
        let config = LinesConfig {
            comment_prefixes: comment_prefixes.iter().map(|prefix| prefix.to_string()).collect(),
            max_line_bytes,
        };
        match decode_lines(&bytes, &config) {
            Ok(lines) => {
                let count = bytes.split(|byte| *byte == b'\n').count();
                prop_assert!(lines.records.len() + lines.errors.len() <= count);
                let mut produced = 0;
                for record in &lines.records {
                    let message = record["message"].as_str().expect("a message is a string");
                    prop_assert!(!message.is_empty() && message.len() <= max_line_bytes);
                    prop_assert_eq!(message, message.trim());
                    prop_assert!(!comment_prefixes.iter().any(|prefix| !prefix.is_empty() && message.starts_with(prefix)));
                    produced += message.len();
                }
                prop_assert!(produced <= bytes.len());
                prop_assert!(lines.errors.iter().all(|error| (1..=count).contains(&error.line)));
            }
            Err(error) => prop_assert!(error.to_string().len() <= MAX_ERROR_TEXT),
        }
    }

    #[test]
    fn lines_are_the_values_left_after_comments_blanks_and_long_ones(
        lines in prop::collection::vec(prop_oneof!["[a-z0-9. ]{0,12}", "# [a-z]{0,6}", " *"], 0..12),
        max_line_bytes in 0usize..14,
    ) {
        let text = lines.join("\n");
        let config = LinesConfig { max_line_bytes, ..LinesConfig::default() };
        let decoded = decode_lines(text.as_bytes(), &config).expect("no HTML here");
        let expected: Vec<Value> = lines
            .iter()
            .filter(|line| line.len() <= max_line_bytes)
            .map(|line| line.trim())
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| json!({"message": line}))
            .collect();
        prop_assert_eq!(decoded.records, expected);
        let too_long: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.len() > max_line_bytes)
            .map(|(index, _)| index + 1)
            .collect();
        let reported: Vec<usize> = decoded.errors.iter().map(|error| error.line).collect();
        prop_assert_eq!(reported, too_long);
    }

    #[test]
    fn any_split_of_any_document_gives_records_or_an_error(
        config in split_config(),
        document in prop_oneof![json_value(), page()],
    ) {
        let Ok(split) = Split::build(&config, &Origin::named("test").child("response.split")) else {
            return Ok(());
        };
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        if split.apply(&document, &mut out, &mut rejected).is_ok() {
            // A split copies parts of the document: each record is at most
            // the document's size plus the keys a `key_field` adds.
            let limit = document.to_string().len() * 2 + 64;
            for record in &out {
                prop_assert!(record.to_string().len() <= limit, "{record} from {document}");
            }
        }
    }

    /// A page split while it arrives gives the records, the rejected
    /// records and the errors of the same page decoded whole, whatever the
    /// split and the page, from memory or from a reader, spooled in memory
    /// or in a file.
    #[test]
    fn a_split_while_reading_gives_what_a_split_of_the_whole_page_gives(
        (config, document) in prop_oneof![
            1 => (split_config(), prop_oneof![json_value(), page()]),
            4 => (event_split(), event_page()),
        ],
        spool_memory in prop_oneof![Just(0usize), 1usize..256, Just(1 << 20)],
        from_reader in any::<bool>(),
    ) {
        let Ok(split) = Split::build(&config, &Origin::named("test").child("response.split")) else {
            return Ok(());
        };
        let Some(plan) = StreamPlan::new(&split, spool_memory) else {
            return Ok(());
        };
        let (mut whole, mut whole_rejected) = (Vec::new(), Vec::new());
        let whole_result = split.apply(&document, &mut whole, &mut whole_rejected);
        let whole: Vec<Map<String, Value>> = whole.into_iter().map(|record| Event::from_value(record).fields).collect();
        let (mut streamed, mut streamed_rejected) = (Vec::new(), Vec::new());
        let mut emit = |emitted: Emitted| {
            match emitted {
                // Assembled as the pipeline assembles it.
                Emitted::Record { record, .. } => streamed.push(record.document()),
                Emitted::Rejected(rejected) => streamed_rejected.push(rejected.record),
            }
            Ok(())
        };
        let text = document.to_string();
        let streamed_result = if from_reader {
            plan.decode(&mut serde_json::Deserializer::from_reader(text.as_bytes()), &mut emit)
        } else {
            plan.decode(&mut serde_json::Deserializer::from_str(&text), &mut emit)
        };
        match (whole_result, streamed_result) {
            (Ok(()), Ok(_)) => {
                prop_assert_eq!(&streamed, &whole, "records of {}", text);
                let mut whole_rejected: Vec<String> = whole_rejected.iter().map(|rejected| rejected.record.to_string()).collect();
                let mut streamed_rejected: Vec<String> = streamed_rejected.iter().map(Value::to_string).collect();
                whole_rejected.sort();
                streamed_rejected.sort();
                prop_assert_eq!(streamed_rejected, whole_rejected, "rejected records of {}", text);
            }
            (Err(whole_error), Err(streamed_error)) => {
                prop_assert_eq!(streamed_error.to_string(), whole_error.to_string());
            }
            (whole_result, streamed_result) => {
                prop_assert!(false, "whole: {whole_result:?}, streamed: {streamed_result:?}, page {text}");
            }
        }
    }

    #[test]
    fn an_array_split_gives_each_element_once(
        items in prop::collection::vec(json_value(), 0..6),
        context in json_value(),
        keep_parent in any::<bool>(),
        ignore_empty_value in any::<bool>(),
    ) {
        let mut document = json!({"page": {"items": items.clone()}, "context": context});
        let config = plain_split("body.page.items", keep_parent, ignore_empty_value);
        let split = Split::build(&config, &Origin::named("test")).expect("a valid split");
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        split.apply(&document, &mut out, &mut rejected).expect("the target is an array");
        prop_assert!(rejected.is_empty());
        if items.is_empty() {
            let expected = if ignore_empty_value { vec![] } else { vec![document.clone()] };
            prop_assert_eq!(out, expected);
        } else if keep_parent {
            prop_assert_eq!(out.len(), items.len());
            for (record, item) in out.iter().zip(&items) {
                document["page"]["items"] = item.clone();
                prop_assert_eq!(record, &document);
            }
        } else {
            prop_assert_eq!(out, items);
        }
    }

    #[test]
    fn any_template_compiles_or_is_refused_and_renders_or_errs(
        source in template_source(),
        context in json_value(),
    ) {
        let mut builder = TemplateBuilder::new();
        let Ok(id) = builder.add(&source) else {
            return Ok(());
        };
        let templates = builder.finish();
        let context = Context::new(json!({"cursor": context.clone(), "last_response": {"body": context}}));
        let _ = templates.render(&id, &context);
    }

    #[test]
    fn helpers_take_any_argument_without_panicking(
        helper in prop::sample::select(vec![
            "format_date(args.a)", "format_date(args.a, args.b)", "parse_date(args.a)", "parse_date(args.a, args.b)",
            "parse_duration(args.a)", "link_header(args.a)", "link_header(args.a, args.b)",
            "next_range(args.a, args.n)", "now() - parse_duration(args.a)", "args.a|int + args.n",
            "args.a|length", "args.a|tojson", "args.a[args.n]", "args.a[args.b]", "args.a|default(args.b)",
        ]),
        a in prop_oneof![json_value(), date_like().prop_map(Value::String)],
        b in prop_oneof![
            prop::sample::select(vec!["%Y-%m-%d", "%Q", "%", "%-", "%.3f", "%s", "%+", "RFC3339", "UnixDate", "unix", "%Y%"])
                .prop_map(|format| Value::String(format.to_owned())),
            json_value(),
        ],
        n in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), -2i64..200],
    ) {
        let mut builder = TemplateBuilder::new();
        let id = builder.add(&format!("[[ {helper} ]]")).expect("a valid template");
        let context = Context::new(json!({"args": {"a": a, "b": b, "n": n}}));
        let _ = builder.finish().render(&id, &context);
    }

    #[test]
    fn next_range_asks_for_the_following_page_or_stops(
        start in prop_oneof![0i64..1000, Just(i64::MAX - 1), Just(i64::MAX)],
        length in prop_oneof![0i64..1000, Just(i64::MAX)],
        total in prop::option::of(prop_oneof![0i64..3000, Just(i64::MAX)]),
        size in prop_oneof![-1i64..300, Just(i64::MAX)],
    ) {
        let end = start.saturating_add(length);
        let total_text = total.map_or("*".to_owned(), |total| total.to_string());
        let header = format!("items {start}-{end}/{total_text}");
        let mut builder = TemplateBuilder::new();
        let id = builder.add("[[ next_range(header, size) ]]").expect("a valid template");
        let rendered = builder
            .finish()
            .render(&id, &Context::new(json!({"header": header, "size": size})))
            .expect("next_range never fails");
        // Another page follows when this one did not reach the total (or,
        // the total unknown, was full), unless its numbers would overflow.
        let more = size >= 1
            && end < i64::MAX
            && match total {
                Some(total) => end + 1 < total,
                None => end - start + 1 >= size,
            };
        if more {
            // A next page reaching past i64::MAX asks for all that is left.
            prop_assert_eq!(rendered, format!("items {}-{}", end + 1, end.saturating_add(size)));
        } else {
            prop_assert_eq!(rendered, "");
        }
    }
}

/// Whether `value` holds a float anywhere.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// `cell` as RFC 4180 writes it: quoted, with doubled quotes, when it holds
/// a comma, a quote or a line break.
fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

/// Text that is sometimes a date and often almost one.
fn date_like() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "2024-01-31",
            "2024-02-30",
            "2024-01-31T12:00:00Z",
            "Wed, 31 Jan 2024 12:00:00 +0000",
            "1706659200",
            "1.5e300",
            "-9999999999999999",
            "99999999999999999999",
            "24h",
            "1w",
            "",
            " ",
        ])
        .prop_map(str::to_owned),
        "[0-9:TZ+ -]{0,25}",
        any::<String>(),
    ]
}

/// A split as written in a manifest: any target (valid or not), kind,
/// flags, discard paths and up to two levels of nested or sibling splits.
fn split_config() -> impl Strategy<Value = SplitConfig> {
    let leaf = split_settings().prop_map(|mut config| {
        config.split = None;
        config
    });
    leaf.prop_recursive(2, 6, 3, |inner| {
        (
            split_settings(),
            prop_oneof![
                inner.clone().prop_map(|child| NestedSplit::One(Box::new(child))),
                prop::collection::vec(inner, 0..3).prop_map(NestedSplit::Siblings),
            ],
        )
            .prop_map(|(mut config, nested)| {
                config.split = Some(nested);
                config
            })
    })
}

/// The settings of one split, its nested split left empty: mostly valid,
/// now and then a target, path or delimiter that the build must refuse.
fn split_settings() -> impl Strategy<Value = SplitConfig> {
    fn mostly<T: Clone + std::fmt::Debug + 'static>(
        valid: Vec<T>,
        invalid: Vec<T>,
    ) -> impl Strategy<Value = T> {
        prop_oneof![8 => prop::sample::select(valid), 1 => prop::sample::select(invalid)]
    }
    let target = mostly(
        vec!["body", "body.a", "body.a.b", "body.b", "body.name", "body.~/"],
        vec!["body.", "body..a", "a", "", "bodya"],
    );
    let kind = prop::sample::select(vec![SplitKind::Array, SplitKind::Map, SplitKind::String]);
    let key_field = mostly(vec!["a", "b.c", "name"], vec!["", ".", "a..b"]);
    let discard = mostly(
        vec!["body.a", "body.b.c", "body.name"],
        vec!["a", "", "body.", "."],
    );
    (
        target,
        kind,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(key_field),
        prop::option::weighted(0.9, prop::sample::select(vec![",", "", ";", "|", "ab"])),
        prop::collection::vec(discard, 0..3),
    )
        .prop_map(
            |(target, kind, keep_parent, ignore_empty_value, key_field, delimiter, discard)| SplitConfig {
                target: target.to_owned(),
                kind,
                keep_parent,
                ignore_empty_value,
                key_field: key_field.map(str::to_owned),
                delimiter: delimiter.map(str::to_owned),
                discard: discard.into_iter().map(str::to_owned).collect(),
                split: None,
            },
        )
}

/// A page as feeds send them: the keys splits name, holding lists (of
/// objects, mostly) or anything else.
fn page() -> impl Strategy<Value = Value> {
    let list = prop::collection::vec(json_value(), 1..4).prop_map(Value::Array);
    let field = prop_oneof![3 => list, 1 => json_value()].boxed();
    let inner = prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c", "name"]),
        field.clone(),
        0..3,
    )
    .prop_map(|map| {
        Value::Object(
            map.into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    })
    .boxed();
    let field = prop_oneof![2 => field, 1 => inner.clone(), 1 => prop::collection::vec(inner, 1..3).prop_map(Value::Array)];
    prop::collection::btree_map(prop::sample::select(vec!["a", "b", "name", "~/"]), field, 1..4).prop_map(
        |map| {
            Value::Object(
                map.into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect(),
            )
        },
    )
}

/// A split shaped like the MISP fileset's: a list of elements (`body.a`)
/// whose nested lists (`x.a`, `x.b`, `c`) are cut by sibling splits, with or
/// without their parent, one of them split again; now and then a nested
/// split of another kind, which makes the element be decoded whole.
fn event_split() -> impl Strategy<Value = SplitConfig> {
    let child = (
        prop::sample::select(vec!["body.x.a", "body.x.b", "body.c"]),
        prop_oneof![6 => Just(SplitKind::Array), 1 => Just(SplitKind::Map)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(target, kind, keep_parent, ignore_empty_value, nested)| {
            let mut config = plain_split(target, keep_parent, ignore_empty_value);
            config.kind = kind;
            // A list inside each element, as MISP objects hold their attributes.
            if nested {
                let inner = format!("{target}.a");
                config.split = Some(NestedSplit::One(Box::new(plain_split(&inner, true, true))));
            }
            config
        });
    (
        prop::sample::select(vec!["body.a", "body.name.a", "body"]),
        any::<bool>(),
        prop::collection::vec(prop::sample::select(vec!["body.x.g", "body.c", "body.x.a"]), 0..2),
        prop::collection::vec(child, 0..3),
    )
        .prop_map(|(target, ignore_empty_value, discard, children)| {
            let mut config = plain_split(target, false, ignore_empty_value);
            config.discard = discard.into_iter().map(str::to_owned).collect();
            config.split = match children.len() {
                0 => None,
                1 => children
                    .into_iter()
                    .next()
                    .map(|child| NestedSplit::One(Box::new(child))),
                _ => Some(NestedSplit::Siblings(children)),
            };
            config
        })
}

/// A page for [`event_split`]: a list of elements holding lists of objects
/// (or anything else) under the split paths, context before and after them.
fn event_page() -> impl Strategy<Value = Value> {
    let item = prop::collection::btree_map(
        prop::sample::select(vec!["a", "id", "v"]),
        prop_oneof![3 => json_value(), 1 => prop::collection::vec(json_value(), 0..3).prop_map(Value::Array)],
        0..3,
    )
    .prop_map(object_of);
    let list = prop_oneof![
        6 => prop::collection::vec(item, 0..5).prop_map(Value::Array),
        1 => json_value(),
    ];
    let inner = prop::collection::btree_map(
        prop::sample::select(vec!["0", "a", "b", "g", "t"]),
        list.clone(),
        0..5,
    )
    .prop_map(object_of);
    let element = prop_oneof![
        8 => (inner, list, json_value()).prop_map(|(x, c, z)| json!({"x": x, "c": c, "z": z})),
        1 => json_value(),
    ];
    let elements = prop_oneof![
        8 => prop::collection::vec(element, 0..5).prop_map(Value::Array),
        1 => json_value(),
    ];
    (elements, json_value()).prop_map(|(elements, context)| event_body(elements, context))
}

/// A JSON object of `members`.
fn object_of(members: std::collections::BTreeMap<&'static str, Value>) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// The elements under `a` (and under `name.a`), with context around them;
/// a list alone stands for a body that is the list itself.
fn event_body(elements: Value, context: Value) -> Value {
    if elements.as_array().is_some_and(|items| items.len() % 2 == 1) {
        return elements;
    }
    json!({"0": context.clone(), "a": elements.clone(), "name": {"a": elements, "z": context.clone()}, "z": context})
}

/// An array split on `target` with no nested split.
fn plain_split(target: &str, keep_parent: bool, ignore_empty_value: bool) -> SplitConfig {
    SplitConfig {
        target: target.to_owned(),
        kind: SplitKind::Array,
        keep_parent,
        ignore_empty_value,
        key_field: None,
        delimiter: None,
        discard: Vec::new(),
        split: None,
    }
}

/// Template text: runtime delimiters, expressions, filters, helpers and
/// blocks, in any order, with now and then any character. Numbers stay
/// small and there is no `range` or `*`: a template is configuration, and
/// what is tested is that no source makes the engine panic, not how long a
/// deliberately huge loop takes.
fn template_source() -> impl Strategy<Value = String> {
    let tokens = vec![
        "[[",
        "]]",
        "[%",
        "%]",
        "[#",
        "#]",
        "{{",
        "}}",
        " ",
        "cursor",
        "last_response",
        ".",
        "body",
        "a",
        "b",
        "name",
        "[",
        "]",
        "(",
        ")",
        "'",
        "\"",
        "|",
        "int",
        "length",
        "default",
        "tojson",
        "max",
        "min",
        "first",
        "last",
        "items",
        "keys",
        "+",
        "-",
        "/",
        "//",
        "%",
        "~",
        "==",
        "<",
        " if ",
        " else ",
        " for ",
        " in ",
        " endfor ",
        " endif ",
        " set ",
        "=",
        " not ",
        " and ",
        "now()",
        "parse_duration(",
        "'24h'",
        "format_date(",
        "parse_date(",
        "link_header(",
        "next_range(",
        "'%Y'",
        "'%Q'",
        "0",
        "1",
        "-1",
        "9223372036854775807",
        "1.5",
        ",",
        "none",
        "true",
        "loop.index",
        " macro ",
        " endmacro ",
        " call ",
        " recursive ",
        "loop(",
        " break ",
        " continue ",
        "\n",
    ];
    prop::collection::vec(
        prop_oneof![
            12 => prop::sample::select(tokens).prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

#[test]
fn deeply_nested_json_and_templates_are_errors_not_stack_overflows() {
    let deep = "[".repeat(100_000);
    assert!(decode_json(deep.as_bytes()).is_err());
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(decode_json(deep.as_bytes()).is_err());
    let deep = "{\"a\":".repeat(100_000);
    assert!(decode_ndjson(deep.as_bytes()).is_err());

    let mut builder = TemplateBuilder::new();
    let parens = format!("[[ {}1{} ]]", "(".repeat(10_000), ")".repeat(10_000));
    assert!(builder.add(&parens).is_err());
    let blocks = format!(
        "{}x{}",
        "[% if true %]".repeat(10_000),
        "[% endif %]".repeat(10_000)
    );
    assert!(builder.add(&blocks).is_err());
    let id = builder
        .add("[% macro f(n) %][[ f(n + 1) ]][% endmacro %][[ f(0) ]]")
        .unwrap();
    let error = builder
        .finish()
        .render(&id, &Context::new(json!({})))
        .unwrap_err();
    assert!(error.contains("recursion"), "{error}");
}

#[test]
fn a_runaway_quote_costs_at_most_the_row_limit() {
    // One quote opens a cell that never closes; everything after it is one
    // bad row per line, none longer than the limit.
    let mut text = "name,value\n\"".to_owned();
    for index in 0..2_000 {
        text.push_str(&format!("row{index},{index}\n"));
    }
    let config = CsvConfig {
        max_row_bytes: 100,
        ..CsvConfig::default()
    };
    let rows = decode_csv(text.as_bytes(), &config).unwrap();
    assert_eq!(
        rows.errors.len(),
        1,
        "{:?}",
        &rows.errors[..3.min(rows.errors.len())]
    );
    assert_eq!(rows.records.len(), 1_999);
    let unlimited = CsvConfig {
        max_row_bytes: usize::MAX,
        ..CsvConfig::default()
    };
    let rows = decode_csv(text.as_bytes(), &unlimited).unwrap();
    assert!(rows.errors[0].reason.contains("not closed"), "{:?}", rows.errors);
}

#[test]
fn objects_keyed_by_every_character_decode() {
    // Keys with `~` and `/` are JSON pointer escapes in the template context.
    let mut map = Map::new();
    for key in ["~", "/", "~1", "~0", "a/b", ""] {
        map.insert(key.to_owned(), json!(key));
    }
    let expected: String = map.keys().map(|key| format!("{key}|")).collect();
    let value = Value::Object(map);
    let mut builder = TemplateBuilder::new();
    let id = builder
        .add("[% for key in body %][[ body[key] ]]|[% endfor %]")
        .unwrap();
    let rendered = builder
        .finish()
        .render(&id, &Context::new(json!({"body": value})))
        .unwrap();
    assert_eq!(rendered, expected);
}

#[test]
fn helper_inputs_that_used_to_panic() {
    let render = |source: &str, context: Value| {
        let mut builder = TemplateBuilder::new();
        let id = builder.add(source).unwrap();
        builder.finish().render(&id, &Context::new(context))
    };
    // chrono fails on an unknown specifier while formatting; `to_string` panicked.
    let error = render("[[ format_date(0, '%Q') ]]", json!({})).unwrap_err();
    assert!(error.contains("`%Q` is not a valid date format"), "{error}");
    // `end + 1` and `end + size` overflowed on a server's extreme numbers.
    let next = |header: &str, size: i64| {
        render(
            "[[ next_range(header, size) ]]",
            json!({"header": header, "size": size}),
        )
        .unwrap()
    };
    assert_eq!(next(&format!("items 0-{}/*", i64::MAX), 100), "");
    assert_eq!(next("items 0-1/3", i64::MAX), format!("items 2-{}", i64::MAX));
    assert_eq!(next("items 0-99/250", 100), "items 100-199");
}
