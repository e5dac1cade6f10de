//! `output.console`: one JSON document per line on stdout, `@metadata`
//! included as Beats prints it (so `op_type` and `doc_as_upsert` too: an
//! `update` prints its partial document, a `delete` only its `@metadata`).
//! For trying a module out and for piping.

use std::io::Write;

use async_trait::async_trait;
use serde::Deserialize;
use threatbeat_core::{BuildContext, ConfigError, Event, OpType, Output, OutputError, PluginConfig};

/// The settings under `output.console`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Indent each document over several lines (no longer NDJSON).
    #[serde(default)]
    pub pretty: bool,
}

/// Writes events to a `Write` (stdout in production, a buffer in tests).
pub struct ConsoleOutput<W: Write + Send> {
    pretty: bool,
    writer: W,
}

impl<W: Write + Send> ConsoleOutput<W> {
    /// An output writing to `writer`.
    pub fn new(config: &ConsoleConfig, writer: W) -> Self {
        Self {
            pretty: config.pretty,
            writer,
        }
    }

    /// The writer, for tests.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

/// Builds `output.console` writing to stdout.
pub fn build(config: &PluginConfig, _context: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let parsed: ConsoleConfig = config.parse()?;
    Ok(Box::new(ConsoleOutput::new(&parsed, std::io::stdout())))
}

#[async_trait]
impl<W: Write + Send> Output for ConsoleOutput<W> {
    async fn publish(&mut self, events: Vec<Event>) -> Result<(), OutputError> {
        let mut buffer = Vec::with_capacity(events.len() * 512);
        for event in &events {
            let document = if event.op_type() == OpType::Delete {
                serde_json::json!({ threatbeat_core::METADATA_NAMESPACE: event.metadata })
            } else {
                event.to_json_with_metadata()
            };
            let written = if self.pretty {
                serde_json::to_writer_pretty(&mut buffer, &document)
            } else {
                serde_json::to_writer(&mut buffer, &document)
            };
            written
                .map_err(|error| OutputError::Write(format!("console: cannot encode an event: {error}")))?;
            buffer.push(b'\n');
        }
        self.writer
            .write_all(&buffer)
            .and_then(|()| self.writer.flush())
            .map_err(|error| OutputError::Write(format!("console: cannot write to stdout: {error}")))
    }

    async fn close(&mut self) -> Result<(), OutputError> {
        self.writer
            .flush()
            .map_err(|error| OutputError::Write(format!("console: cannot flush stdout: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn writes_one_document_per_line_with_metadata() {
        let mut output = ConsoleOutput::new(&ConsoleConfig::default(), Vec::new());
        let mut event = Event::from_value(json!({"threat": {"indicator": {"ip": "10.0.0.1"}}}));
        event.set_id("abc");
        output
            .publish(vec![event, Event::from_value(json!({"a": 1}))])
            .await
            .unwrap();
        let text = String::from_utf8(output.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                json!({"threat": {"indicator": {"ip": "10.0.0.1"}}, "@metadata": {"_id": "abc"}}),
                json!({"a": 1})
            ]
        );
    }

    #[tokio::test]
    async fn prints_the_action_and_no_fields_for_a_delete() {
        let mut output = ConsoleOutput::new(&ConsoleConfig::default(), Vec::new());
        let mut update = Event::from_value(json!({"@timestamp": "2026-02-01T00:00:00Z"}));
        update.set_id("ioc");
        update.set_op_type(OpType::Update);
        let mut delete = Event::from_value(json!({"left": "over"}));
        delete.set_id("ioc");
        delete.set_op_type(OpType::Delete);
        output.publish(vec![update, delete]).await.unwrap();
        let text = String::from_utf8(output.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                json!({"@timestamp": "2026-02-01T00:00:00Z", "@metadata": {"_id": "ioc", "op_type": "update"}}),
                json!({"@metadata": {"_id": "ioc", "op_type": "delete"}})
            ]
        );
    }

    #[test]
    fn rejects_unknown_settings() {
        let config = PluginConfig {
            type_name: "console".into(),
            settings: json!({"prety": true}),
            origin: threatbeat_core::Origin::named("threatbeat.yml").child("output.console"),
        };
        let error = build(&config, &BuildContext::default()).err().unwrap();
        assert_eq!(error.key, "output.console.prety");
    }
}
