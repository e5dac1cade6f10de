//! The MISP simulator's fidelity to `shared/reference/misp-api.md`: body
//! rules (§3), filters (§4–§6), paging and counts (§7), shapes (§8), errors (§9).

use chrono::Utc;
use serde_json::{json, Value};
use threatbeat_test_support::misp::{generate_events, MispSimulator, API_KEY};

async fn post(
    misp: &MispSimulator,
    path: &str,
    body: &str,
    content_type: Option<&str>,
    key: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(misp.url(path))
        .header("Authorization", key)
        .header("Accept", "application/json");
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let response = request.body(body.to_owned()).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn search(misp: &MispSimulator, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post(misp, path, &body.to_string(), Some("application/json"), API_KEY).await
}

#[tokio::test]
async fn body_rules_and_errors_follow_misp() {
    let misp = MispSimulator::start(generate_events(2, 2, 1_700_000_000)).await;
    let (status, _, body) = post(
        &misp,
        "/events/restSearch",
        "{\"limit\": 1}",
        Some("text/plain"),
        API_KEY,
    )
    .await;
    assert_eq!(status, 400, "without the JSON content type the body is ignored");
    assert_eq!(body["url"], "/events/restSearch");
    assert_eq!(body["name"], body["message"]);
    let (status, _, _) = post(
        &misp,
        "/events/restSearch",
        "{}",
        Some("application/json"),
        API_KEY,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, body) = post(
        &misp,
        "/events/restSearch",
        "{nope",
        Some("application/json"),
        API_KEY,
    )
    .await;
    assert_eq!(status, 405, "invalid JSON is 405, not 400");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON input."));
    let (status, _, body) = post(
        &misp,
        "/events/restSearch",
        "{\"limit\": 1}",
        Some("application/json"),
        "short",
    )
    .await;
    assert_eq!(status, 403);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Authentication failed."));
    let (status, _, _) = post(
        &misp,
        "/events/restSearch",
        "{\"limit\": 1}",
        Some("application/json"),
        &format!("bad, {API_KEY}"),
    )
    .await;
    assert_eq!(status, 200, "comma-separated keys are tried in turn");
    let (status, _, body) = search(&misp, "/events/restSearch", json!({"returnFormat": "stix9"})).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("Invalid output format."))
    );
    let (status, _, _) = search(&misp, "/events/restSearch", json!({"timestamp": [1, 2, 3]})).await;
    assert_eq!(status, 500, "a range of three is an uncaught error");
    let (status, _, body) = search(&misp, "/events/restSearch.json", json!({"request": {"limit": 1}})).await;
    assert_eq!(status, 200, "`.json` suffix and the request wrapper");
    assert_eq!(body["response"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn shapes_paging_and_result_counts() {
    let misp = MispSimulator::start(generate_events(5, 3, 1_700_000_000)).await;
    let (_, headers, body) = search(&misp, "/events/restSearch", json!({"limit": 2, "page": 3})).await;
    assert_eq!(body["response"].as_array().unwrap().len(), 1);
    assert_eq!(headers["x-result-count"], "5", "events: the total with limit");
    assert!(body["response"][0]["Event"]["Attribute"].is_array());
    let (_, headers, body) = search(&misp, "/attributes/restSearch", json!({"limit": 4, "page": 1})).await;
    assert_eq!(body["response"]["Attribute"].as_array().unwrap().len(), 4);
    assert_eq!(
        headers["x-result-count"], "5",
        "attributes: rows read plus one when the page is full"
    );
    let row = &body["response"]["Attribute"][0];
    assert!(row["Event"]["uuid"].is_string() && row["Event"]["info"].is_string());
    assert!(row.get("Tag").is_none(), "Tag absent when empty");
    let (_, headers, body) = search(&misp, "/attributes/restSearch", json!({"limit": 4, "page": 9})).await;
    assert_eq!(body, json!({"response": {"Attribute": []}}));
    assert_eq!(headers["x-result-count"], "0");
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"limit": 4, "page": 9})).await;
    assert_eq!(body, json!({"response": []}));
    let (_, _, body) = search(
        &misp,
        "/attributes/restSearch",
        json!({"page": 2, "includeEventTags": 1}),
    )
    .await;
    assert_eq!(
        body["response"]["Attribute"].as_array().unwrap().len(),
        15,
        "page without limit is ignored"
    );
    assert_eq!(body["response"]["Attribute"][0]["Tag"][0]["inherited"], 1);
}

#[tokio::test]
async fn filters_time_type_tags_order_and_false() {
    let now = Utc::now().timestamp();
    let mut events = generate_events(4, 4, now - 7200);
    events[0]["Tag"] = json!([{"name": "workflow:state=\"complete\""}]);
    events[1]["Tag"] = json!([{"name": "tlp:red"}]);
    events[2]["published"] = json!(false);
    let misp = MispSimulator::start(events).await;
    let count = |body: &Value| {
        body["response"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_else(|| body["response"]["Attribute"].as_array().unwrap().len())
    };
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"timestamp": now - 7198})).await;
    assert_eq!(count(&body), 2, "lower bound inclusive");
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"timestamp": "1h"})).await;
    assert_eq!(count(&body), 0, "relative: newer than one hour ago");
    let (_, _, body) = search(
        &misp,
        "/events/restSearch",
        json!({"timestamp": [now - 7199, now - 7198]}),
    )
    .await;
    assert_eq!(count(&body), 2);
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"timestamp": "1 week"})).await;
    assert_eq!(count(&body), 0, "unparseable time = now + 1 s, no error");
    let (_, _, body) = search(
        &misp,
        "/attributes/restSearch",
        json!({"type": ["ip-dst", "domain"]}),
    )
    .await;
    assert_eq!(count(&body), 8);
    let (_, _, body) = search(&misp, "/attributes/restSearch", json!({"type": "ip-dst||url"})).await;
    assert_eq!(count(&body), 8, "`||` splits a string into an OR list");
    let (_, _, body) = search(
        &misp,
        "/events/restSearch",
        json!({"tags": ["workflow:state=\"complete\""]}),
    )
    .await;
    assert_eq!(count(&body), 1);
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"tags": "TLP:%&&!tlp:red"})).await;
    assert_eq!(
        count(&body),
        2,
        "`TLP:%` matches tlp:white and tlp:red case-insensitively; the negation drops the red one"
    );
    let (_, _, body) = search(
        &misp,
        "/attributes/restSearch",
        json!({"tags": {"NOT": ["tlp:red"]}}),
    )
    .await;
    assert_eq!(count(&body), 12);
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"tags": ["no-such-tag"]})).await;
    assert_eq!(count(&body), 0, "an unknown OR tag matches nothing");
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"published": false})).await;
    assert_eq!(count(&body), 4, "JSON false means not set");
    let (_, _, body) = search(&misp, "/events/restSearch", json!({"published": 0})).await;
    assert_eq!(count(&body), 1);
    let (_, _, body) = search(
        &misp,
        "/events/restSearch",
        json!({"order": "Event.timestamp desc", "limit": 1}),
    )
    .await;
    assert_eq!(
        body["response"][0]["Event"]["timestamp"],
        json!((now - 7197).to_string())
    );
}

#[tokio::test]
async fn pymisp_connect_calls_are_served() {
    let misp = MispSimulator::start(Vec::new()).await;
    let client = reqwest::Client::new();
    for path in [
        "/servers/getVersion",
        "/users/view/me",
        "/attributes/describeTypes.json",
    ] {
        let response = client
            .get(misp.url(path))
            .header("Authorization", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body.get("version")
                .or(body.get("User"))
                .or(body.get("result"))
                .is_some(),
            "{path}: {body}"
        );
    }
    let response = client
        .get(misp.url("/events/restSearch"))
        .header("Authorization", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "GET without parameters");
}
