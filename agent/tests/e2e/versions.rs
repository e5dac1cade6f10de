//! The history index counted per attribute version: MISP data edited while
//! the agent runs gives an attribute one history document per version (its
//! `_id` hashes the attribute timestamp), so exactly-once is per version.

use std::collections::BTreeSet;

use serde_json::Value;
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::MispSimulator;

use super::{field, live_attributes, INDEX, LATEST_INDEX};

/// One attribute version: (event uuid, attribute uuid, attribute timestamp).
pub type Version = (String, String, String);

/// Every attribute version `misp` holds now, plain and in objects; deleted
/// attributes are left out (their deletion is no history, while the
/// version delivered before it stays).
pub fn attribute_versions(misp: &MispSimulator) -> BTreeSet<Version> {
    live_attributes(misp)
        .into_iter()
        .map(|(event_uuid, attribute)| {
            let text = |name: &str| attribute[name].as_str().unwrap_or_default().to_owned();
            (event_uuid, text("uuid"), text("timestamp"))
        })
        .collect()
}

/// The attribute version of every document in `index`, one entry per document.
pub fn indexed_versions(cluster: &ElasticsearchSimulator, index: &str) -> Vec<Version> {
    cluster
        .documents(index)
        .iter()
        .map(|document| {
            let source = &document.source;
            let text = |path: &str| field(source, path).and_then(Value::as_str).map(str::to_owned);
            let event = text("misp.uuid").unwrap_or_else(|| panic!("no misp.uuid in {source}"));
            let (attribute, timestamp) = match text("misp.attribute.uuid") {
                Some(uuid) => (uuid, text("misp.attribute.timestamp")),
                None => (
                    text("misp.object.attribute.uuid")
                        .unwrap_or_else(|| panic!("no attribute uuid in {source}")),
                    text("misp.object.attribute.timestamp"),
                ),
            };
            let timestamp = timestamp.unwrap_or_else(|| panic!("no attribute timestamp in {source}"));
            (event, attribute, timestamp)
        })
        .collect()
}

/// What the history index holds against the versions expected there.
#[derive(Debug, Default)]
pub struct HistoryCount {
    /// Documents in the history index.
    pub documents: usize,
    /// Distinct attribute versions among them.
    pub distinct: usize,
    /// Documents beyond the first of their version.
    pub duplicates: usize,
    /// Expected versions with no document.
    pub lost: Vec<Version>,
    /// Versions with a document that were not expected.
    pub unexpected: Vec<Version>,
}

/// Compares the history index with `expected`, one document per version.
pub fn count_history(cluster: &ElasticsearchSimulator, expected: &BTreeSet<Version>) -> HistoryCount {
    let versions = indexed_versions(cluster, INDEX);
    let distinct: BTreeSet<Version> = versions.iter().cloned().collect();
    HistoryCount {
        documents: versions.len(),
        distinct: distinct.len(),
        duplicates: versions.len() - distinct.len(),
        lost: expected.difference(&distinct).cloned().collect(),
        unexpected: distinct.difference(expected).cloned().collect(),
    }
}

/// Asserts the history index holds exactly one document per expected
/// attribute version (an attribute edited in MISP after it was delivered has
/// two) under as many distinct `_id`s, and nothing went elsewhere.
pub fn assert_history_exactly_once(cluster: &ElasticsearchSimulator, expected: &BTreeSet<Version>) {
    let count = count_history(cluster, expected);
    assert_eq!(
        count.duplicates, 0,
        "one document per attribute version, no duplicates"
    );
    assert!(
        count.lost.is_empty() && count.unexpected.is_empty(),
        "lost (first 5): {:?}; unexpected (first 5): {:?}",
        &count.lost[..count.lost.len().min(5)],
        &count.unexpected[..count.unexpected.len().min(5)]
    );
    assert_eq!(count.documents, expected.len(), "N documents");
    assert_eq!(cluster.ids(INDEX).len(), expected.len(), "N distinct _ids");
    let indices = cluster.indices();
    assert!(
        indices == [INDEX] || indices == [INDEX, LATEST_INDEX],
        "nothing went elsewhere (no dead letters): {indices:?}"
    );
}
