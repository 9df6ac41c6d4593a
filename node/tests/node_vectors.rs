//! Vector collections over HTTP on a real node: the happy path, every refusal, and the
//! collection after a clean restart.

mod node_common;

use std::time::Duration;

use node_common::NodeProc;
use serde_json::{json, Value as Json};

async fn call(
    http: &reqwest::Client,
    node: &NodeProc,
    method: reqwest::Method,
    path: &str,
    body: Option<Json>,
) -> (u16, Json) {
    let mut req = http.request(method, node.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_over_http() {
    use reqwest::Method as M;
    let node = NodeProc::start(&[]);
    let http = reqwest::Client::new();
    let (s, b) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors",
        Some(json!({"name": "docs", "dim": 3})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["metric"], "cosine");
    let (s, _) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors",
        Some(json!({"name": "docs", "dim": 3})),
    )
    .await;
    assert_eq!(s, 200);
    let points = json!([
        {"key": "x", "vector": [1.0, 0.0, 0.0], "metadata": {"lang": "en"}},
        {"key": "y", "vector": [0.0, 1.0, 0.0], "metadata": {"lang": "fr"}},
        {"key": "z", "vector": [0.9, 0.1, 0.0], "metadata": {"lang": "fr"}},
    ]);
    let (s, b) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/docs/points",
        Some(points),
    )
    .await;
    assert_eq!((s, b["upserted"].as_u64()), (200, Some(3)));
    let (s, b) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/docs/search",
        Some(json!({"vector": [1, 0, 0], "k": 2})),
    )
    .await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = b["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["x", "z"]);
    assert!(b["hits"][0]["distance"].as_f64().unwrap() < 1e-5);
    let (_, b) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/docs/search",
        Some(json!({"vector": [1, 0, 0], "k": 1, "filter": {"lang": "fr"}})),
    )
    .await;
    assert_eq!(b["hits"][0]["key"], "z");
    assert_eq!(b["hits"][0]["metadata"]["lang"], "fr");

    // Refusals, each with its status and code, nothing changed.
    let refusals: Vec<(M, &str, Json, u16)> = vec![
        (
            M::POST,
            "/v1/vectors",
            json!({"name": "docs", "dim": 4}),
            409,
        ),
        (
            M::POST,
            "/v1/vectors",
            json!({"name": "a/b", "dim": 4}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors",
            json!({"name": "big", "dim": 100000}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors",
            json!({"name": "m", "dim": 2, "metric": "hamming"}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors",
            json!({"name": "m", "dim": 2, "extra": 1}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors/docs/points",
            json!([{"key": "w", "vector": [1, 2]}]),
            400,
        ),
        (
            M::POST,
            "/v1/vectors/docs/points",
            json!([{"key": "", "vector": [1, 2, 3]}]),
            400,
        ),
        (
            M::POST,
            "/v1/vectors/docs/points",
            json!([{"key": "w", "vector": [0, 0, 0]}]),
            400,
        ),
        (M::POST, "/v1/vectors/docs/points", json!({"key": "w"}), 400),
        (
            M::POST,
            "/v1/vectors/nope/points",
            json!([{"key": "w", "vector": [1, 2, 3]}]),
            404,
        ),
        (
            M::POST,
            "/v1/vectors/docs/search",
            json!({"vector": [1, 0]}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors/docs/search",
            json!({"vector": [1, 0, 0], "text": "x"}),
            400,
        ),
        (M::POST, "/v1/vectors/docs/search", json!({}), 400),
        (
            M::POST,
            "/v1/vectors/docs/search",
            json!({"vector": [1, 0, 0], "k": 5000}),
            400,
        ),
        (
            M::POST,
            "/v1/vectors/nope/search",
            json!({"vector": [1, 0, 0]}),
            404,
        ),
    ];
    for (m, path, body, want) in refusals {
        let (s, b) = call(&http, &node, m, path, Some(body.clone())).await;
        assert_eq!(s, want, "{path} {body}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
    let r = http
        .post(node.url("/v1/vectors/docs/search"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, list) = call(&http, &node, M::GET, "/v1/vectors", None).await;
    assert_eq!(
        list,
        json!([{"name": "docs", "dim": 3, "metric": "cosine", "points": 3}])
    );

    // Text search embeds with the collection's dimension.
    let (s, b) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors",
        Some(json!({"name": "t", "dim": 64})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/t/search",
        Some(json!({"text": "hello"})),
    )
    .await;
    assert_eq!(s, 200);

    // A clean restart keeps the collection and answers the same.
    let (_, before) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/docs/search",
        Some(json!({"vector": [0.5, 0.5, 0], "k": 3})),
    )
    .await;
    node.sigterm();
    let mut node = node;
    assert!(node
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    let dir = node.sigkill();
    let node = NodeProc::start_in(dir, &[]);
    let (_, after) = call(
        &http,
        &node,
        M::POST,
        "/v1/vectors/docs/search",
        Some(json!({"vector": [0.5, 0.5, 0], "k": 3})),
    )
    .await;
    assert_eq!(before, after);
    let (s, _) = call(&http, &node, M::DELETE, "/v1/vectors/docs/points/x", None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&http, &node, M::DELETE, "/v1/vectors/docs/points/x", None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&http, &node, M::DELETE, "/v1/vectors/docs", None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&http, &node, M::DELETE, "/v1/vectors/docs", None).await;
    assert_eq!(s, 404);
}
