//! The httpjson input beyond MISP: next-link paging (body and `Link`
//! header), the page limit, auth headers, form bodies, config errors.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use threatbeat_core::{BuildContext, Origin, PluginConfig};

type Seen = Arc<Mutex<Vec<String>>>;

fn items(page: u64) -> Value {
    json!([{"id": page * 10 + 1}, {"id": page * 10 + 2}])
}

async fn body_next(State(seen): State<Seen>, Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    seen.lock().unwrap().push(format!("body-next {page}"));
    let next = if page < 3 {
        json!(format!("/body-next?page={}", page + 1))
    } else {
        Value::Null
    };
    Json(json!({"items": items(page), "next": next}))
}

async fn link(State(seen): State<Seen>, Query(query): Query<HashMap<String, String>>) -> Response {
    let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    seen.lock().unwrap().push(format!("link {page}"));
    let mut headers = HeaderMap::new();
    let mut links = vec![format!("</link?page=1>; rel=\"first\"")];
    if page < 4 {
        links.push(format!("</link?page={}>; rel=\"next\"", page + 1));
    }
    headers.insert("link", links.join(", ").parse().unwrap());
    (headers, Json(json!({"items": items(page)}))).into_response()
}

async fn endless(State(seen): State<Seen>, Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    seen.lock().unwrap().push(format!("endless {page}"));
    Json(json!({"items": items(page), "next": format!("/endless?page={}", page + 1)}))
}

async fn echo(headers: HeaderMap, body: String) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Json(
        json!({"authorization": header("authorization"), "x_api_key": header("x-api-key"),
        "content_type": header("content-type"), "body": body}),
    )
}

async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route("/body-next", get(body_next))
        .route("/link", get(link))
        .route("/endless", get(endless))
        .route("/echo", post(echo).get(echo))
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), seen)
}

fn httpjson(settings: Value) -> PluginConfig {
    PluginConfig {
        type_name: "httpjson".into(),
        settings,
        origin: Origin::named("modules.d/feed.yml").child("input.httpjson"),
    }
}

async fn ids(config: &PluginConfig) -> Vec<u64> {
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "feed", None);
    run_once(config, &pipeline).await.unwrap();
    pipeline
        .events()
        .iter()
        .map(|e| e.fields["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn next_link_in_the_body() {
    let (base, seen) = server().await;
    let config = httpjson(json!({
        "request": {"url": format!("{base}/body-next")},
        "response": {"split": {"target": "body.items"},
            "pagination": [{"set": {"target": "url.value", "value": "[[ last_response.body.next ]]"}}]}
    }));
    assert_eq!(ids(&config).await, vec![11, 12, 21, 22, 31, 32]);
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["body-next 1", "body-next 2", "body-next 3"]
    );
}

#[tokio::test]
async fn next_link_in_the_link_header() {
    let (base, seen) = server().await;
    let config = httpjson(json!({
        "request": {"url": format!("{base}/link?page=1")},
        "response": {"split": {"target": "body.items"},
            "pagination": [{"set": {"target": "url.value", "value": "[[ link_header(last_response.header.link) ]]"}}]}
    }));
    assert_eq!(ids(&config).await.len(), 8);
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn page_limit_stops_a_server_that_never_ends() {
    let (base, seen) = server().await;
    let config = httpjson(json!({
        "request": {"url": format!("{base}/endless")},
        "response": {"split": {"target": "body.items"}, "page_limit": 5,
            "pagination": [{"set": {"target": "url.value", "value": "[[ last_response.body.next ]]"}}]}
    }));
    assert_eq!(ids(&config).await.len(), 10);
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn rate_limit_spaces_requests() {
    let (base, seen) = server().await;
    let config = httpjson(json!({
        "request": {"url": format!("{base}/body-next"), "rate_limit": {"limit": 10}},
        "response": {"split": {"target": "body.items"},
            "pagination": [{"set": {"target": "url.value", "value": "[[ last_response.body.next ]]"}}]}
    }));
    let started = std::time::Instant::now();
    assert_eq!(ids(&config).await.len(), 6);
    assert_eq!(seen.lock().unwrap().len(), 3);
    // 10 requests per second: 3 requests need at least 2 gaps of 100 ms (a lower bound only).
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
}

async fn echoed(settings: Value) -> Value {
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "feed", None);
    run_once(&httpjson(settings), &pipeline).await.unwrap();
    Value::Object(pipeline.events()[0].fields.clone())
}

#[tokio::test]
async fn auth_methods_and_form_bodies_reach_the_server() {
    let (base, _) = server().await;
    let url = format!("{base}/echo");
    let basic =
        echoed(json!({"request": {"url": url}, "auth": {"basic": {"user": "u", "password": "p"}}})).await;
    assert_eq!(basic["authorization"], "Basic dTpw");
    let bearer = echoed(json!({"request": {"url": url}, "auth": {"bearer": {"token": "t0k"}}})).await;
    assert_eq!(bearer["authorization"], "Bearer t0k");
    let key = echoed(
        json!({"request": {"url": url}, "auth": {"api_key": {"header": "X-Api-Key", "value": "k3y"}}}),
    )
    .await;
    assert_eq!(key["x_api_key"], "k3y");
    let form = echoed(
        json!({"request": {"url": url, "method": "POST", "encode_as": "application/x-www-form-urlencoded",
        "body": {"query": "get_recent", "selector": 100}}}),
    )
    .await;
    assert_eq!(form["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(form["body"], "query=get_recent&selector=100");
    let json_body = echoed(json!({"request": {"url": url, "method": "POST", "body": {"limit": 10}}})).await;
    assert_eq!(json_body["content_type"], "application/json");
    assert_eq!(json_body["body"], "{\"limit\":10}");
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_names_the_status() {
    let (base, _) = server().await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new(data.path(), "feed", None);
    let error = run_once(
        &httpjson(json!({"request": {"url": format!("{base}/teapot")}})),
        &pipeline,
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("418 I'm a teapot: short and stout"),
        "{error}"
    );
}

fn build_error(settings: Value) -> threatbeat_core::ConfigError {
    match threatbeat_inputs::registry().build(&httpjson(settings), &BuildContext::default()) {
        Ok(_) => panic!("the config should be rejected"),
        Err(error) => error,
    }
}

#[test]
fn config_errors_name_file_and_key() {
    let error = build_error(json!({"request": {"url": "http://x", "methd": "GET"}}));
    assert_eq!(error.file, "modules.d/feed.yml");
    assert_eq!(error.key, "input.httpjson.request.methd");
    assert!(error.reason.contains("unknown field `methd`"), "{error}");

    let error = build_error(
        json!({"request": {"url": "http://x", "transforms": [{"set": {"target": "body.a", "value": "[[ oops("}}]}}),
    );
    assert_eq!(error.key, "input.httpjson.request.transforms.0.set.value");

    let error = build_error(json!({"request": {"url": "not a url"}}));
    assert_eq!(error.key, "input.httpjson.request.url");

    let error = build_error(json!({"request": {"url": "http://x"}, "interval": "1w"}));
    assert!(error.reason.contains("unknown unit `w`"), "{error}");

    let error = build_error(
        json!({"request": {"url": "http://x"}, "auth": {"bearer": {"token": "a"}, "basic": {"user": "u", "password": "p"}}}),
    );
    assert_eq!(error.key, "input.httpjson.auth");

    let error = build_error(
        json!({"request": {"url": "https://x", "ssl": {"certificate_authorities": ["/nonexistent/ca.pem"]}}}),
    );
    assert_eq!(error.key, "input.httpjson.request.ssl.certificate_authorities.0");
    assert!(error.reason.contains("/nonexistent/ca.pem"));

    let error = build_error(json!({"request": {"url": "https://x", "ssl": {"certificate": "c.pem"}}}));
    assert_eq!(error.key, "input.httpjson.request.ssl.key");

    let error =
        build_error(json!({"request": {"url": "http://x"}, "response": {"split": {"target": "items"}}}));
    assert_eq!(error.key, "input.httpjson.response.split.target");
}

#[test]
fn verification_mode_none_and_certificate_build() {
    for mode in ["none", "certificate", "full"] {
        let config =
            httpjson(json!({"request": {"url": "https://misp.test", "ssl": {"verification_mode": mode}}}));
        assert!(
            threatbeat_inputs::registry()
                .build(&config, &BuildContext::default())
                .is_ok(),
            "{mode}"
        );
    }
}

#[test]
fn the_misp_manifests_build() {
    // misp/threat `extends` misp_attributes: the agent links them
    // (agent/src/modules), and its tests check the linked input.
    for fileset in ["threatintel/misp", "threatintel/misp_attributes"] {
        for (input, paging) in [("httpjson", "offset"), ("httpjson", "keyset"), ("file", "offset")] {
            let config = manifest_input(
                fileset,
                json!({"input": input, "paging": paging, "paths": ["/tmp/feed"]}),
            );
            if let Err(error) = threatbeat_inputs::registry().build(&config, &BuildContext::default()) {
                panic!("{fileset} with {input}/{paging}: {error}");
            }
        }
    }
}
