//! `output.console`: one JSON document per line on stdout, `@metadata`
//! included as Beats prints it (so `op_type` and `doc_as_upsert` too: an
//! `update` prints its partial document, a `delete` only its `@metadata`).
//! For trying a module out and for piping.

use std::io::Write;

use async_trait::async_trait;
use serde::Deserialize;
use threatbeat_core::{
    BuildContext, ConfigError, DecodeError, EncodedEvent, Output, OutputError, PluginConfig,
};

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

impl<W: Write + Send> ConsoleOutput<W> {
    /// Replaces `line` with the event as printed: compact JSON with its
    /// `@metadata`, indented when `pretty`.
    fn format(&self, event: &EncodedEvent, line: &mut Vec<u8>) -> Result<(), DecodeError> {
        line.clear();
        event.write_with_metadata(event.metadata.text(), line)?;
        if self.pretty {
            let document: serde_json::Value = serde_json::from_slice(line)?;
            line.clear();
            serde_json::to_writer_pretty(&mut *line, &document)?;
        }
        Ok(())
    }
}

/// Builds `output.console` writing to stdout.
pub fn build(config: &PluginConfig, _context: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let parsed: ConsoleConfig = config.parse()?;
    Ok(Box::new(ConsoleOutput::new(&parsed, std::io::stdout())))
}

#[async_trait]
impl<W: Write + Send> Output for ConsoleOutput<W> {
    /// The queued document goes out as it is, `@metadata` put in front of
    /// its members; only `pretty` parses it again, to indent it.
    async fn publish(&mut self, events: Vec<EncodedEvent>) -> Result<(), OutputError> {
        let mut buffer = Vec::with_capacity(events.iter().map(|event| event.source.len() + 64).sum());
        let mut line = Vec::new();
        for event in &events {
            match self.format(event, &mut line) {
                Ok(()) => {
                    buffer.extend_from_slice(&line);
                    buffer.push(b'\n');
                }
                Err(error) => tracing::error!(
                    %error,
                    id = event.id().unwrap_or(""),
                    "console: skipping a queued event that cannot be read back"
                ),
            }
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
    use threatbeat_core::{Event, OpType};

    #[tokio::test]
    async fn writes_one_document_per_line_with_metadata() {
        let mut output = ConsoleOutput::new(&ConsoleConfig::default(), Vec::new());
        let mut event = Event::from_value(json!({"threat": {"indicator": {"ip": "10.0.0.1"}}}));
        event.set_id("abc");
        output
            .publish_events(vec![event, Event::from_value(json!({"a": 1}))])
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
        output.publish_events(vec![update, delete]).await.unwrap();
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

    #[tokio::test]
    async fn a_queued_event_that_is_not_an_object_is_skipped_and_the_rest_printed() {
        let encoded = |value: serde_json::Value| {
            let mut event = Event::from_value(value);
            event.set_id("ok");
            event.encode().unwrap()
        };
        let broken = EncodedEvent {
            metadata: threatbeat_core::EncodedMetadata::from_map(
                json!({"_id": "broken"}).as_object().unwrap(),
            ),
            source: bytes::Bytes::from_static(b"[1]"),
        };
        for pretty in [false, true] {
            let mut output = ConsoleOutput::new(&ConsoleConfig { pretty }, Vec::new());
            output
                .publish(vec![
                    encoded(json!({"a": 1})),
                    broken.clone(),
                    encoded(json!({"b": {"c": 2}})),
                ])
                .await
                .unwrap();
            let text = String::from_utf8(output.into_inner()).unwrap();
            let documents: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                documents,
                vec![
                    json!({"a": 1, "@metadata": {"_id": "ok"}}),
                    json!({"b": {"c": 2}, "@metadata": {"_id": "ok"}})
                ],
                "pretty: {pretty}"
            );
            assert_eq!(text.lines().count() > 2, pretty, "{text}");
        }
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
