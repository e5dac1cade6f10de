//! The MISP mappings (`modules.d/definitions/{threatintel/misp,
//! threatintel/misp_attributes}/processors.yml`; `misp/threat` extends
//! misp_attributes), type by type:
//! every MISP attribute type of the mapping table (reference §3.8) gets its
//! ECS fields checked, composite types included; document ids are stable
//! and include the event. (Config errors: `misp_config_errors.rs`; real
//! MISP events through split and mapping: `misp_real_events.rs`.)

use std::fs;

use serde_json::{json, Map, Value};
use threatbeat::modules::{builtin_definition, resolve};
use threatbeat_core::{BuildContext, Event, FieldPath, Origin};
use threatbeat_processors::Chain;

fn chain(module: &str, fileset: &str) -> Chain {
    let definition = builtin_definition(module, fileset).unwrap();
    let resolved = resolve(&definition, &Map::new(), &Origin::named("test")).unwrap();
    Chain::build(
        &resolved.processors,
        &resolved.processors_origin,
        &BuildContext::default(),
    )
    .unwrap()
}

/// A real record of Elastic's golden input (one event, one attribute).
fn event_record() -> Value {
    let path =
        threatbeat_test_support::data::fixture("filebeat-threatintel/misp/misp_sample_cidr.ndjson.log");
    serde_json::from_str(fs::read_to_string(path).unwrap().lines().next().unwrap()).unwrap()
}

/// The same attribute as `/attributes/restSearch` returns it.
fn attribute_record(kind: &str, value: &str) -> Value {
    json!({
        "id": "901", "event_id": "12", "object_id": "0", "object_relation": null, "category": "Network activity",
        "type": kind, "to_ids": true, "uuid": "5f4a9f0e-1c2b-4d5e-9f00-0242ac120002", "timestamp": "1715103708",
        "distribution": "5", "sharing_group_id": "0", "comment": "", "deleted": false, "disable_correlation": false,
        "first_seen": null, "last_seen": null, "value": value,
        "Event": {"org_id": "1", "distribution": "3", "publish_timestamp": "1715103708", "id": "12",
                  "info": "Phishing wave", "orgc_id": "2", "uuid": "6a1d8f60-7b8c-4d1e-a2f3-0242ac120002"},
        "Tag": [{"id": "1", "name": "tlp:amber", "colour": "#FFC000", "numerical_value": null, "is_galaxy": false, "local": 0}]
    })
}

fn get<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    event.get(&FieldPath::parse(path).unwrap())
}

fn run_event_type(chain: &Chain, kind: &str, value: &str) -> Event {
    let mut record = event_record();
    record["Event"]["Attribute"]["type"] = json!(kind);
    record["Event"]["Attribute"]["value"] = json!(value);
    chain.run(Event::from_value(record)).expect("kept")
}

/// (MISP type, value, expected threat.indicator.type, expected fields).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Value)>,
);

/// Field names built at run time live for the whole test process.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn event_cases() -> Vec<Case> {
    let hash = |name: &'static str| -> Case {
        let field = leak(format!("threat.indicator.file.hash.{name}"));
        (name, "0123abcd", "file", vec![(field, json!("0123abcd"))])
    };
    let mut cases: Vec<_> = [
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha512/224",
        "sha512/256",
        "sha3-224",
        "sha3-256",
        "sha3-384",
        "sha3-512",
        "ssdeep",
        "imphash",
        "impfuzzy",
        "pehash",
        "tlsh",
        "vhash",
    ]
    .into_iter()
    .map(hash)
    .collect();
    for name in [
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha512/224",
        "sha512/256",
        "sha3-224",
        "sha3-256",
        "sha3-384",
        "sha3-512",
        "ssdeep",
        "imphash",
        "impfuzzy",
        "pehash",
        "tlsh",
        "vhash",
        "authentihash",
    ] {
        let kind = leak(format!("filename|{name}"));
        let field = leak(format!("threat.indicator.file.hash.{name}"));
        cases.push((
            kind,
            "dropper.exe|ff00",
            "file",
            vec![
                ("threat.indicator.file.name", json!("dropper.exe")),
                (field, json!("ff00")),
            ],
        ));
    }
    cases.extend([
        (
            "filename",
            "dropper.exe",
            "file",
            vec![("threat.indicator.file.name", json!("dropper.exe"))],
        ),
        ("filename-pattern", ".*\\.exe", "file", vec![]),
        (
            "url",
            "https://evil.example:8443/a/b.php?x=1#f",
            "url",
            vec![
                (
                    "threat.indicator.url.original",
                    json!("https://evil.example:8443/a/b.php?x=1#f"),
                ),
                (
                    "threat.indicator.url.full",
                    json!("https://evil.example:8443/a/b.php?x=1#f"),
                ),
                ("threat.indicator.url.scheme", json!("https")),
                ("threat.indicator.url.domain", json!("evil.example")),
                ("threat.indicator.url.port", json!(8443)),
                ("threat.indicator.url.path", json!("/a/b.php")),
                ("threat.indicator.url.extension", json!("php")),
                ("threat.indicator.url.query", json!("x=1")),
                ("threat.indicator.url.fragment", json!("f")),
            ],
        ),
        (
            "link",
            "http://a.example/",
            "url",
            vec![("threat.indicator.url.domain", json!("a.example"))],
        ),
        ("uri", "/admin/login.php", "url", vec![]),
        (
            "regkey",
            "HKLM\\Software\\Run",
            "windows-registry-key",
            vec![("threat.indicator.registry.key", json!("HKLM\\Software\\Run"))],
        ),
        (
            "regkey|value",
            "HKLM\\Software\\Run|evil.exe",
            "windows-registry-key",
            vec![
                ("threat.indicator.registry.key", json!("HKLM\\Software\\Run")),
                ("threat.indicator.registry.value", json!("evil.exe")),
            ],
        ),
        (
            "AS",
            "64496",
            "autonomous-system",
            vec![("threat.indicator.as.number", json!(64496))],
        ),
        (
            "hostname",
            "c2.example",
            "domain-name",
            vec![("threat.indicator.url.domain", json!("c2.example"))],
        ),
        (
            "domain",
            "example.org",
            "domain-name",
            vec![("threat.indicator.url.domain", json!("example.org"))],
        ),
        (
            "domain|ip",
            "c2.example|198.51.100.7",
            "domain-name",
            vec![
                ("threat.indicator.url.domain", json!("c2.example")),
                ("threat.indicator.ip", json!("198.51.100.7")),
            ],
        ),
        (
            "ip-src",
            "198.51.100.7",
            "ipv4-addr",
            vec![("threat.indicator.ip", json!("198.51.100.7"))],
        ),
        (
            "ip-dst",
            "2001:db8::1",
            "ipv4-addr",
            vec![("threat.indicator.ip", json!("2001:db8::1"))],
        ),
        (
            "ip-src|port",
            "198.51.100.7|4444",
            "ipv4-addr",
            vec![
                ("threat.indicator.ip", json!("198.51.100.7")),
                ("threat.indicator.port", json!(4444)),
            ],
        ),
        (
            "ip-dst|port",
            "198.51.100.7|443",
            "ipv4-addr",
            vec![
                ("threat.indicator.ip", json!("198.51.100.7")),
                ("threat.indicator.port", json!(443)),
            ],
        ),
        (
            "email-src",
            "a@evil.example",
            "email-addr",
            vec![("threat.indicator.email.address", json!("a@evil.example"))],
        ),
        (
            "email-dst",
            "b@evil.example",
            "email-addr",
            vec![("threat.indicator.email.address", json!("b@evil.example"))],
        ),
        ("email", "c@evil.example", "email-message", vec![]),
        ("email-subject", "Invoice", "email-message", vec![]),
        ("email-body", "Hello", "email-message", vec![]),
        ("email-attachment", "invoice.zip", "email-message", vec![]),
        (
            "mac-address",
            "00:11:22:33:44:55",
            "mac-addr",
            vec![("threat.indicator.mac", json!("00:11:22:33:44:55"))],
        ),
        (
            "mac-eui-64",
            "00:11:22:ff:fe:33:44:55",
            "mac-addr",
            vec![("threat.indicator.mac", json!("00:11:22:ff:fe:33:44:55"))],
        ),
    ]);
    cases
}

#[test]
fn every_misp_attribute_type_maps_to_its_ecs_fields() {
    let chain = chain("threatintel", "misp");
    for (kind, value, indicator, fields) in event_cases() {
        let event = run_event_type(&chain, kind, value);
        assert_eq!(
            get(&event, "threat.indicator.type"),
            Some(&json!(indicator)),
            "{kind}"
        );
        for (field, expected) in &fields {
            assert_eq!(get(&event, field), Some(expected), "{kind}: {field}");
        }
        assert_eq!(
            get(&event, "misp.attribute.value"),
            None,
            "{kind}: a typed indicator's value is removed"
        );
        assert_eq!(get(&event, "error.message"), None, "{kind}");
        assert_eq!(get(&event, "misp.attribute.type"), Some(&json!(kind)));
    }
}

#[test]
fn other_types_are_unknown_and_keep_their_value() {
    let chain = chain("threatintel", "misp");
    for kind in [
        "text",
        "comment",
        "size-in-bytes",
        "float",
        "malware-sample",
        "hostname|port",
        "mutex",
        "yara",
    ] {
        let event = run_event_type(&chain, kind, "raw|value");
        assert_eq!(
            get(&event, "threat.indicator.type"),
            Some(&json!("unknown")),
            "{kind}"
        );
        assert_eq!(
            get(&event, "misp.attribute.value"),
            Some(&json!("raw|value")),
            "{kind}"
        );
        assert_eq!(get(&event, "error.message"), None, "{kind}");
    }
}

#[test]
fn bad_composite_values_are_skipped_or_marked_like_elastic() {
    let chain = chain("threatintel", "misp");
    // CIDR on the left of ip|port: skipped silently (golden misp_sample_cidr).
    let event = run_event_type(&chain, "ip-dst|port", "146.88.240.0/24|80");
    assert_eq!(get(&event, "threat.indicator.ip"), None);
    assert_eq!(get(&event, "error.message"), None);
    // A CIDR in plain ip-dst is kept as is, as Elastic does.
    let event = run_event_type(&chain, "ip-dst", "146.88.240.0/24");
    assert_eq!(
        get(&event, "threat.indicator.ip"),
        Some(&json!("146.88.240.0/24"))
    );
    // AS1234 does not convert to a number: the event is kept and marked.
    let event = run_event_type(&chain, "AS", "AS1234");
    assert_eq!(
        get(&event, "threat.indicator.type"),
        Some(&json!("autonomous-system"))
    );
    let message = get(&event, "error.message").and_then(Value::as_str).unwrap();
    assert!(
        message.contains("unable to convert [AS1234] to long"),
        "{message}"
    );
    // domain|ip with a bad IP: marked, nothing half-written.
    let event = run_event_type(&chain, "domain|ip", "c2.example|not-an-ip");
    assert!(get(&event, "error.message").is_some());
    assert_eq!(get(&event, "threat.indicator.url.domain"), None);
}

#[test]
fn ids_are_stable_and_include_the_event() {
    let chain = chain("threatintel", "misp");
    let record = event_record();
    let first = chain.run(Event::from_value(record.clone())).unwrap();
    let again = chain.run(Event::from_value(record.clone())).unwrap();
    assert!(first.id().is_some());
    assert_eq!(first.id(), again.id(), "same attribute twice, same _id");
    let mut other_event = record.clone();
    other_event["Event"]["uuid"] = json!("00000000-0000-4000-8000-000000000001");
    let other = chain.run(Event::from_value(other_event)).unwrap();
    assert_ne!(
        first.id(),
        other.id(),
        "same attribute in another event, another _id"
    );
    let mut object = record;
    object["Event"]["Object"] = json!({"name": "file", "Attribute": {"uuid": "657c5f2b-9d68-4ff7-a9ad-ab9e6a6c953e",
        "type": "md5", "value": "70461da8b94c6ca5d2fda3260c5a8c3b", "distribution": "5"}});
    let object = chain.run(Event::from_value(object)).unwrap();
    assert_ne!(first.id(), object.id(), "an object attribute is its own document");
    // Data streams accept only `create`: an edit must get a new id or it would
    // be refused as a duplicate and lost.
    let mut edited = event_record();
    edited["Event"]["Attribute"]["timestamp"] = json!("1700000999");
    let edited = chain.run(Event::from_value(edited)).unwrap();
    assert_ne!(first.id(), edited.id(), "an edited attribute is a new version");

    let attributes = self::chain("threatintel", "misp_attributes");
    let a = attributes
        .run(Event::from_value(attribute_record("ip-dst", "198.51.100.7")))
        .unwrap();
    let b = attributes
        .run(Event::from_value(attribute_record("ip-dst", "198.51.100.7")))
        .unwrap();
    assert_eq!(a.id(), b.id());
    // ti_misp's fingerprint: sha1 of 0x00 Event.uuid, 0x00 timestamp, 0x00 uuid (first_seen is null).
    assert_eq!(a.id(), Some("aiRTj6B9a/fDp0w2FAnWLw/qH+E="));
    let mut moved = attribute_record("ip-dst", "198.51.100.7");
    moved["Event"]["uuid"] = json!("00000000-0000-4000-8000-000000000002");
    assert_ne!(a.id(), attributes.run(Event::from_value(moved)).unwrap().id());
}

#[test]
fn attributes_api_records_map_like_ti_misp() {
    for (module, fileset, dataset) in [
        ("threatintel", "misp_attributes", "threatintel.misp_attributes"),
        ("misp", "threat", "misp.threat"),
    ] {
        let chain = chain(module, fileset);
        let event = chain
            .run(Event::from_value(attribute_record(
                "domain|ip",
                "c2.example|198.51.100.7",
            )))
            .unwrap();
        let expect = [
            ("event.dataset", json!(dataset)),
            ("event.category", json!(["threat"])),
            ("threat.indicator.type", json!("domain-name")),
            ("threat.indicator.url.domain", json!("c2.example")),
            ("threat.indicator.ip", json!("198.51.100.7")),
            ("threat.indicator.marking.tlp", json!(["AMBER"])),
            ("threat.indicator.provider", json!("misp")),
            ("@timestamp", json!("2024-05-07T17:41:48.000Z")),
            ("misp.event.publish_timestamp", json!("2024-05-07T17:41:48.000Z")),
            ("misp.event.distribution", json!(3)),
            ("misp.attribute.distribution", json!(5)),
            ("misp.attribute.decayed_at", json!("2024-08-05T17:41:48.000Z")),
            ("misp.attribute.decayed", json!(true)),
            ("organization.id", json!("1")),
        ];
        for (field, value) in &expect {
            assert_eq!(get(&event, field), Some(value), "{fileset}: {field}");
        }
        let tags = get(&event, "tags").unwrap().as_array().unwrap();
        assert!(
            tags.contains(&json!("tlp:amber")) && tags.contains(&json!("forwarded")),
            "appended: {tags:?}"
        );
        for gone in [
            "misp.attribute.value",
            "misp.attribute.timestamp",
            "misp.tag",
            "misp.attribute.first_seen",
            "error.message",
        ] {
            assert_eq!(get(&event, gone), None, "{fileset}: {gone}");
        }
        for (kind, value, indicator, field, expected) in [
            (
                "email-subject",
                "Invoice",
                "email-addr",
                "threat.indicator.email.subject",
                json!("Invoice"),
            ),
            (
                "email-src",
                "a@evil.example",
                "email-addr",
                "threat.indicator.email.address",
                json!("a@evil.example"),
            ),
            (
                "mime-type",
                "application/zip",
                "artifact",
                "threat.indicator.type",
                json!("artifact"),
            ),
            (
                "mutex",
                "Global\\x",
                "mutex",
                "threat.indicator.type",
                json!("mutex"),
            ),
            (
                "cpe",
                "cpe:2.3:a:x:y:1",
                "software",
                "threat.indicator.type",
                json!("software"),
            ),
            (
                "uri",
                "http://a.example/x",
                "url",
                "threat.indicator.url.path",
                json!("/x"),
            ),
            (
                "filename|sha256",
                "a.exe|ff",
                "file",
                "threat.indicator.file.hash.sha256",
                json!("ff"),
            ),
        ] {
            let event = chain
                .run(Event::from_value(attribute_record(kind, value)))
                .unwrap();
            assert_eq!(
                get(&event, "threat.indicator.type"),
                Some(&json!(indicator)),
                "{kind}"
            );
            assert_eq!(get(&event, field), Some(&expected), "{kind}");
        }
        let unknown = chain
            .run(Event::from_value(attribute_record("text", "free text")))
            .unwrap();
        assert_eq!(
            get(&unknown, "threat.indicator.type"),
            None,
            "ti_misp leaves unmapped types untyped"
        );
        assert_eq!(get(&unknown, "misp.attribute.value"), Some(&json!("free text")));
    }
}

#[test]
fn empty_pages_and_foreign_records_are_dropped() {
    let events = chain("threatintel", "misp");
    assert!(events.run(Event::from_value(json!({"response": []}))).is_none());
    let attributes = chain("threatintel", "misp_attributes");
    assert!(attributes
        .run(Event::from_value(json!({"response": {"Attribute": []}})))
        .is_none());
}

#[test]
fn preserve_original_event_keeps_the_record() {
    let definition = builtin_definition("threatintel", "misp").unwrap();
    let mut overrides = Map::new();
    overrides.insert("var.preserve_original_event".into(), json!(true));
    let resolved = resolve(&definition, &overrides, &Origin::named("test")).unwrap();
    let chain = Chain::build(
        &resolved.processors,
        &resolved.processors_origin,
        &BuildContext::default(),
    )
    .unwrap();
    let mut record = event_record();
    record["Event"].as_object_mut().unwrap().remove("Tag");
    let event = chain.run(Event::from_value(record.clone())).unwrap();
    let original: Value =
        serde_json::from_str(get(&event, "event.original").unwrap().as_str().unwrap()).unwrap();
    assert_eq!(original, record);
    assert!(get(&event, "tags")
        .unwrap()
        .as_array()
        .unwrap()
        .contains(&json!("preserve_original_event")));
    let plain = self::chain("threatintel", "misp")
        .run(Event::from_value(record))
        .unwrap();
    assert_eq!(get(&plain, "event.original"), None, "off by default");
}
