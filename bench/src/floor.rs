//! The floor: the least work that still moves every attribute from MISP to
//! Elasticsearch — fetch each page, parse it, write one small document per
//! attribute into an uncompressed bulk body, post it. No processors, no queue,
//! no cursor. Run as a child process (`threatbeat-bench floor ...`) so it is
//! measured exactly like the agent.

use std::io::Write;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Where the floor reads and writes.
pub struct FloorArgs {
    pub misp_url: String,
    pub api_key: String,
    pub es_url: String,
    pub limit: usize,
    pub bulk_max_size: usize,
}

/// Index the floor writes to.
pub const FLOOR_INDEX: &str = "floor-bench";

/// Fetches every page and ships every attribute; returns the number of documents.
pub async fn run(args: &FloorArgs) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let bulk_url = format!("{}/_bulk", args.es_url);
    let mut body = Vec::with_capacity(1 << 20);
    let mut pending = 0usize;
    let mut shipped = 0u64;
    for page in 1.. {
        let request = json!({"page": page, "limit": args.limit, "returnFormat": "json",
            "order": "Event.timestamp asc", "timestamp": 0});
        let response = client
            .post(&args.misp_url)
            .header("Authorization", &args.api_key)
            .header("Accept", "application/json")
            .json(&request)
            .send()
            .await
            .with_context(|| format!("fetching page {page}"))?;
        if !response.status().is_success() {
            bail!("page {page}: HTTP {}", response.status());
        }
        let bytes = response.bytes().await?;
        let parsed: Value = serde_json::from_slice(&bytes).with_context(|| format!("page {page}"))?;
        let events = parsed["response"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for wrapper in events {
            let event = &wrapper["Event"];
            let plain = event["Attribute"].as_array().into_iter().flatten();
            let in_objects = event["Object"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|object| object["Attribute"].as_array())
                .flatten();
            for attribute in plain.chain(in_objects) {
                body.extend_from_slice(b"{\"create\":{\"_index\":\"floor-bench\"}}\n");
                serde_json::to_writer(
                    &mut body,
                    &json!({"event": event["uuid"], "uuid": attribute["uuid"],
                        "type": attribute["type"], "value": attribute["value"]}),
                )?;
                body.write_all(b"\n")?;
                pending += 1;
                if pending == args.bulk_max_size {
                    shipped += post(&client, &bulk_url, &mut body, &mut pending).await?;
                }
            }
        }
    }
    if pending > 0 {
        shipped += post(&client, &bulk_url, &mut body, &mut pending).await?;
    }
    Ok(shipped)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &mut Vec<u8>,
    pending: &mut usize,
) -> anyhow::Result<u64> {
    let response = client
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .body(std::mem::take(body))
        .send()
        .await?;
    let status = response.status();
    let answer = response.bytes().await?;
    if !status.is_success()
        || !answer.starts_with(b"{\"errors\":false") && contains(&answer, b"\"errors\":true")
    {
        bail!(
            "bulk: HTTP {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    let count = *pending as u64;
    *pending = 0;
    Ok(count)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
