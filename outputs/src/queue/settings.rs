//! `queue.disk` / `queue.mem` settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{deserialize_at, nest_dotted_keys, BuildContext, ConfigError, NullKeys, Origin};

use super::disk::{Compression, DiskSettings, FsyncPolicy};
use crate::elasticsearch::settings_util;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    #[serde(default)]
    disk: Option<RawDisk>,
    #[serde(default)]
    mem: Option<RawMem>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default = "default_max_size", deserialize_with = "settings_util::size")]
    max_size: u64,
    #[serde(default, deserialize_with = "optional_size")]
    segment_size: Option<u64>,
    #[serde(default)]
    fsync: Option<String>,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    flush: RawFlush,
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    shutdown_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMem {
    #[serde(default = "default_mem_events")]
    events: usize,
    #[serde(default)]
    flush: RawFlush,
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    shutdown_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlush {
    #[serde(default = "default_min_events")]
    min_events: usize,
    #[serde(default = "default_max_events")]
    max_events: usize,
    #[serde(
        default = "default_flush_timeout",
        deserialize_with = "threatbeat_core::duration::deserialize"
    )]
    timeout: Duration,
}

impl Default for RawFlush {
    fn default() -> Self {
        Self {
            min_events: default_min_events(),
            max_events: default_max_events(),
            timeout: default_flush_timeout(),
        }
    }
}

fn optional_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    settings_util::size(deserializer).map(Some)
}
fn default_max_size() -> u64 {
    10 * 1024 * MIB
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_mem_events() -> usize {
    3200
}
fn default_min_events() -> usize {
    1600
}
fn default_max_events() -> usize {
    3200
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(1)
}

/// Which queue, with its storage settings.
#[derive(Debug, Clone)]
pub enum QueueKind {
    /// `queue.disk`.
    Disk(DiskSettings),
    /// `queue.mem` with its event capacity.
    Mem(usize),
}

/// Validated queue settings.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The storage.
    pub kind: QueueKind,
    /// The consumer waits for this many events (or `flush_timeout`) before sending.
    pub min_events: usize,
    /// The most events handed to the output at once.
    pub max_events: usize,
    /// How long the consumer waits for `min_events`.
    pub flush_timeout: Duration,
    /// How long `close` waits for the queue to drain.
    pub shutdown_timeout: Duration,
}

impl QueueSettings {
    /// Parses the raw `queue` value (null or absent → `queue.disk` with defaults).
    pub fn parse(value: &Value, origin: &Origin, context: &BuildContext) -> Result<Self, ConfigError> {
        let raw: RawQueue = if value.is_null() {
            RawQueue {
                disk: None,
                mem: None,
            }
        } else {
            deserialize_at(&nest_dotted_keys(value.clone(), NullKeys::Keep), origin)?
        };
        match (raw.disk, raw.mem) {
            (Some(_), Some(_)) => Err(origin.error("configure either queue.disk or queue.mem, not both")),
            (_, Some(mem)) => {
                if mem.events == 0 {
                    return Err(origin.child("mem.events").error("must be at least 1"));
                }
                let flush = check_flush(&mem.flush, &origin.child("mem.flush"))?;
                Ok(Self {
                    kind: QueueKind::Mem(mem.events),
                    min_events: flush.0.min(mem.events),
                    max_events: flush.1,
                    flush_timeout: mem.flush.timeout,
                    shutdown_timeout: mem.shutdown_timeout,
                })
            }
            (disk, None) => {
                let disk = disk.unwrap_or_else(|| RawDisk {
                    max_size: default_max_size(),
                    shutdown_timeout: default_shutdown_timeout(),
                    ..RawDisk::default()
                });
                let origin = origin.child("disk");
                let path = match &disk.path {
                    Some(path) if path.is_absolute() => path.clone(),
                    Some(path) => context.data_path.join(path),
                    None => context.data_path.join("diskqueue"),
                };
                let segment_size = disk
                    .segment_size
                    .unwrap_or((disk.max_size / 10).clamp(64 * 1024, 64 * MIB));
                if segment_size < 4096 {
                    return Err(origin.child("segment_size").error("must be at least 4KB"));
                }
                if disk.max_size < 2 * segment_size {
                    return Err(origin.child("max_size").error(format!(
                        "must be at least twice segment_size ({segment_size} bytes)"
                    )));
                }
                let fsync = match disk.fsync.as_deref() {
                    None | Some("cursor") => FsyncPolicy::Cursor,
                    Some("batch") => FsyncPolicy::Batch,
                    Some("always") => FsyncPolicy::Always,
                    Some("never") => FsyncPolicy::Never,
                    Some(other) => FsyncPolicy::Interval(
                        threatbeat_core::duration::parse_duration(other).map_err(|_| {
                            origin.child("fsync").error(format!(
                                "`{other}` is not cursor, batch, always, never or an interval such as 1s"
                            ))
                        })?,
                    ),
                };
                let compression = match disk.compression.as_deref() {
                    None => Compression::default(),
                    Some("none") => Compression::None,
                    Some("lz4") => Compression::Lz4,
                    Some(other) => {
                        return Err(origin
                            .child("compression")
                            .error(format!("`{other}` is not none or lz4")))
                    }
                };
                let flush = check_flush(&disk.flush, &origin.child("flush"))?;
                Ok(Self {
                    kind: QueueKind::Disk(DiskSettings {
                        path,
                        max_size: disk.max_size,
                        segment_size,
                        fsync,
                        compression,
                    }),
                    min_events: flush.0,
                    max_events: flush.1,
                    flush_timeout: disk.flush.timeout,
                    shutdown_timeout: disk.shutdown_timeout,
                })
            }
        }
    }
}

fn check_flush(flush: &RawFlush, origin: &Origin) -> Result<(usize, usize), ConfigError> {
    if flush.max_events == 0 {
        return Err(origin.child("max_events").error("must be at least 1"));
    }
    Ok((flush.min_events.clamp(1, flush.max_events), flush.max_events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> BuildContext {
        BuildContext {
            data_path: PathBuf::from("/var/lib/threatbeat"),
            ..BuildContext::default()
        }
    }

    #[test]
    fn defaults_to_a_disk_queue_under_path_data() {
        let settings =
            QueueSettings::parse(&Value::Null, &Origin::named("t").child("queue"), &context()).unwrap();
        let QueueKind::Disk(disk) = settings.kind else {
            panic!("disk expected")
        };
        assert_eq!(disk.compression, Compression::None);
        assert_eq!(disk.path, PathBuf::from("/var/lib/threatbeat/diskqueue"));
        assert_eq!(disk.max_size, 10 * 1024 * MIB);
        assert_eq!(disk.segment_size, 64 * MIB);
        assert_eq!(disk.fsync, FsyncPolicy::Cursor);
    }

    #[test]
    fn parses_every_fsync_policy() {
        let origin = Origin::named("threatbeat.yml").child("queue");
        for (written, policy) in [
            ("cursor", FsyncPolicy::Cursor),
            ("batch", FsyncPolicy::Batch),
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
            ("2s", FsyncPolicy::Interval(Duration::from_secs(2))),
        ] {
            let settings =
                QueueSettings::parse(&json!({"disk.fsync": written}), &origin, &context()).unwrap();
            let QueueKind::Disk(disk) = settings.kind else {
                panic!("disk expected")
            };
            assert_eq!(disk.fsync, policy, "{written}");
        }
    }

    #[test]
    fn parses_disk_and_mem() {
        let origin = Origin::named("threatbeat.yml").child("queue");
        let settings = QueueSettings::parse(
            &json!({"disk.path": "q", "disk.max_size": "1MB", "disk.segment_size": "64KB", "disk.fsync": "250ms", "disk.compression": "lz4"}),
            &origin,
            &context(),
        )
        .unwrap();
        let QueueKind::Disk(disk) = settings.kind else {
            panic!()
        };
        assert_eq!(disk.compression, Compression::Lz4);
        assert_eq!(disk.path, PathBuf::from("/var/lib/threatbeat/q"));
        assert_eq!(disk.fsync, FsyncPolicy::Interval(Duration::from_millis(250)));
        let settings =
            QueueSettings::parse(&json!({"disk": {"compression": "none"}}), &origin, &context()).unwrap();
        assert!(matches!(
            settings.kind,
            QueueKind::Disk(DiskSettings {
                compression: Compression::None,
                ..
            })
        ));
        let settings = QueueSettings::parse(&json!({"mem": {"events": 100}}), &origin, &context()).unwrap();
        assert!(matches!(settings.kind, QueueKind::Mem(100)));
        assert_eq!(settings.min_events, 100);
    }

    #[test]
    fn errors_name_the_key() {
        let origin = Origin::named("threatbeat.yml").child("queue");
        for (value, key) in [
            (json!({"disk": {"fsync": "sometimes"}}), "queue.disk.fsync"),
            (json!({"disk": {"compression": "zstd"}}), "queue.disk.compression"),
            (json!({"disk": {"compression": "LZ4"}}), "queue.disk.compression"),
            (json!({"disk": {"compression": true}}), "queue.disk.compression"),
            (
                json!({"disk": {"max_size": "1MB", "segment_size": "1MB"}}),
                "queue.disk.max_size",
            ),
            (json!({"disk": {"max_size": "lots"}}), "queue.disk.max_size"),
            (json!({"disk": {"maxsize": 1}}), "queue.disk.maxsize"),
            (json!({"mem": {"events": 0}}), "queue.mem.events"),
            (json!({"disk": {}, "mem": {}}), "queue"),
        ] {
            let error = QueueSettings::parse(&value, &origin, &context()).unwrap_err();
            assert_eq!(error.key, key, "{value}: {error}");
        }
    }
}
