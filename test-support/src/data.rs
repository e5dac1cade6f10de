//! The test data vendored in this repository (`test-support/data/`, see its
//! README for where each file comes from and its licence). Tests read their
//! fixtures through here, never from outside the repository.

use std::path::{Path, PathBuf};

/// `test-support/data/`.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The vendored file or folder at `relative` under `test-support/data/`.
///
/// # Panics
/// When it does not exist, with a message naming the path and the README
/// that says where the data comes from, rather than a test that fails later
/// on an empty list.
pub fn fixture(relative: &str) -> PathBuf {
    let path = data_dir().join(relative);
    assert!(
        path.exists(),
        "test fixture {} is missing: the repository's test-support/data/ should hold it \
         (test-support/data/README.md says where each file comes from)",
        path.display()
    );
    path
}

/// Elastic's golden pairs of Filebeat's threatintel module: the folder of `fileset`.
pub fn filebeat_threatintel(fileset: &str) -> PathBuf {
    fixture(&format!("filebeat-threatintel/{fileset}"))
}

/// The real MISP events (`misp/events/`), one JSON file each.
pub fn misp_events_dir() -> PathBuf {
    fixture("misp/events")
}
