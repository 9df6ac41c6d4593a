//! Hostile input against one node process: hundreds of generated malformed requests. Each
//! must get its documented status and a JSON error with the right `code`; the node must stay
//! up and serve others (slow and silent connections included), and nothing of a rejected
//! batch may become visible.

mod node_common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use node_common::{clicks_topic, raw_exchange, window_yaml, NodeProc};
use serde_json::{json, Value as Json};

const MAX_BODY: usize = 1 << 20;
const MAX_EVENT: usize = 256 << 10;

/// One generated request and what it must get.
struct Case {
    label: String,
    method: reqwest::Method,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    index: Option<u64>,
}

fn case(
    label: impl Into<String>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        label: label.into(),
        method: method.parse().unwrap(),
        path: path.into(),
        content_type: content_type.map(String::from),
        body: body.into(),
        status,
        code,
        index: None,
    }
}

const GOOD: &str = r#"{"user":"ann","ts":900000,"amount":3}"#;
const EVENTS: &str = "/v1/topics/clicks/events";
const ND: Option<&str> = Some("application/x-ndjson");

/// Publish bodies whose first line is good and a later one is not: nothing may be applied.
fn publish_cases() -> Vec<Case> {
    let mut v = Vec::new();
    // truncated JSON, at every position
    for cut in 1..GOOD.len() {
        let body = format!("{GOOD}\n{}\n", &GOOD[..cut]);
        let mut c = case(
            format!("truncated at {cut}"),
            "POST",
            EVENTS,
            ND,
            body,
            400,
            "bad_json",
        );
        c.index = Some(1);
        v.push(c);
    }
    // wrong types and shapes
    let wrong = [
        r#"{"user":5,"ts":1}"#,
        r#"{"user":true,"ts":1}"#,
        r#"{"user":null,"ts":1}"#,
        r#"{"user":[],"ts":1}"#,
        r#"{"user":{},"ts":1}"#,
        r#"{"ts":1}"#,
        r#"{"user":"a"}"#,
        r#"{"user":"a","ts":"soon"}"#,
        r#"{"user":"a","ts":-1}"#,
        r#"{"user":"a","ts":true}"#,
        r#"{"user":"a","ts":null}"#,
        r#"{"user":"a","ts":[]}"#,
        r#"{"user":"a","ts":{}}"#,
        r#"{"user":"a","ts":1e30}"#,
        r#"{"user":"a","ts":"2024-13-45T99:00:00Z"}"#,
        r#"{"user":"a","ts":1,"amount":"x"}"#,
        r#"{"user":"a","ts":1,"amount":true}"#,
        r#"{"user":"a","ts":1,"amount":[]}"#,
        r#"{"user":"a","ts":1,"amount":{}}"#,
        r#"{"user":"a","ts":1,"amount":1e300}"#,
        r#"{"user":"a","ts":1,"amount":99999999999999999999999}"#,
        r#"5"#,
        r#""text""#,
        r#"[]"#,
        r#"[{"user":"a","ts":1}]"#,
        r#"null"#,
        r#"true"#,
        r#"{}"#,
    ];
    for w in wrong {
        let body = format!("{GOOD}\n\n{w}\n{GOOD}\n");
        let mut c = case(
            format!("wrong type {w}"),
            "POST",
            EVENTS,
            ND,
            body,
            400,
            "bad_event",
        );
        c.index = Some(1);
        v.push(c);
        // the same as a JSON array
        let body = format!("[{GOOD}, {w}]");
        let mut c = case(
            format!("wrong type in array {w}"),
            "POST",
            EVENTS,
            Some("application/json"),
            body,
            400,
            "bad_event",
        );
        c.index = Some(1);
        v.push(c);
    }
    // invalid UTF-8
    for bad in [
        &b"\xff"[..],
        b"\xc3\x28",
        b"\xe2\x82",
        b"\xf0\x28\x8c\xbc",
        b"\x80",
    ] {
        let mut body = format!("{GOOD}\n{{\"user\":\"").into_bytes();
        body.extend_from_slice(bad);
        body.extend_from_slice(b"\",\"ts\":1}\n");
        let mut c = case(
            "invalid utf-8",
            "POST",
            EVENTS,
            ND,
            body.clone(),
            400,
            "bad_json",
        );
        c.index = Some(1);
        v.push(c);
        let mut arr = b"[".to_vec();
        arr.extend_from_slice(&body[GOOD.len() + 1..body.len() - 1]);
        arr.push(b']');
        v.push(case(
            "invalid utf-8 in array",
            "POST",
            EVENTS,
            Some("application/json"),
            arr,
            400,
            "bad_json",
        ));
    }
    // deep nesting
    for (open, ct) in [
        ("[", "application/x-ndjson"),
        ("[", "application/json"),
        ("{\"a\":", "application/x-ndjson"),
        ("{\"a\":", "application/json"),
        ("[", "application/jsonl"),
    ] {
        // under the event limit: the nesting is what is wrong
        let body = open.repeat(MAX_EVENT / open.len() - 1);
        v.push(case(
            format!("nested {open} as {ct}"),
            "POST",
            EVENTS,
            Some(ct),
            body,
            400,
            "bad_json",
        ));
    }
    // truncated arrays and non-arrays as application/json
    let arr = format!("[{GOOD},{GOOD}]");
    for cut in (1..arr.len()).step_by(7) {
        v.push(case(
            format!("truncated array at {cut}"),
            "POST",
            EVENTS,
            Some("application/json"),
            &arr[..cut],
            400,
            "bad_json",
        ));
    }
    for (body, code) in [
        ("5", "bad_event"),
        ("\"x\"", "bad_event"),
        ("null", "bad_event"),
        ("", "bad_json"),
    ] {
        v.push(case(
            format!("json body {body:?}"),
            "POST",
            EVENTS,
            Some("application/json"),
            body,
            400,
            code,
        ));
    }
    // sizes: a 10 MB line, a body over the limit of good events, one event over its limit
    let ten_mb = format!("{{\"user\":\"{}\",\"ts\":1}}\n", "x".repeat(10 << 20));
    v.push(case(
        "10 MB line",
        "POST",
        EVENTS,
        ND,
        ten_mb.clone(),
        413,
        "too_large",
    ));
    v.push(case(
        "10 MB object",
        "POST",
        EVENTS,
        Some("application/json"),
        ten_mb,
        413,
        "too_large",
    ));
    let many = format!("{GOOD}\n").repeat(MAX_BODY / GOOD.len() + 10);
    v.push(case(
        "body over limit",
        "POST",
        EVENTS,
        ND,
        many,
        413,
        "too_large",
    ));
    let big = format!(
        "{GOOD}\n{{\"user\":\"{}\",\"ts\":1}}\n",
        "y".repeat(MAX_EVENT + 1)
    );
    v.push(case(
        "event over limit",
        "POST",
        EVENTS,
        ND,
        big.clone(),
        413,
        "too_large",
    ));
    v.push(case(
        "event over limit (object)",
        "POST",
        EVENTS,
        Some("application/json"),
        big.lines().nth(1).unwrap().to_string(),
        413,
        "too_large",
    ));
    // wrong content types
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/yaml"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json-seq"),
        Some("application/x-www-form-urlencoded"),
        Some("json"),
        Some(""),
        Some("application/ndjson-but-not"),
    ] {
        v.push(case(
            format!("content type {ct:?}"),
            "POST",
            EVENTS,
            ct,
            format!("{GOOD}\n"),
            415,
            "unsupported_media_type",
        ));
    }
    // unknown topics
    for t in ["nope", "clicks.late", "CLICKS", "clicks%20", "a%2Fb"] {
        v.push(case(
            format!("unknown topic {t}"),
            "POST",
            &format!("/v1/topics/{t}/events"),
            ND,
            format!("{GOOD}\n"),
            404,
            "not_found",
        ));
    }
    v
}

fn topic_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let good = clicks_topic("fresh").to_string();
    for cut in (1..good.len()).step_by(5) {
        v.push(case(
            format!("truncated topic at {cut}"),
            "POST",
            "/v1/topics",
            Some("application/json"),
            &good[..cut],
            400,
            "bad_topic",
        ));
    }
    let f = |fields: Json| json!({"name": "t1", "time": "ts", "fields": fields});
    let ts = json!({"name": "ts", "type": "timestamp"});
    let bad = [
        json!({"name": 5, "time": "ts", "fields": [ts]}),
        json!({"name": "t1", "time": "ts", "fields": "x"}),
        json!({"name": "t1", "time": "ts"}),
        json!({"time": "ts", "fields": [ts]}),
        json!({"name": "t1", "fields": [ts]}),
        json!({"name": "1abc", "time": "ts", "fields": [ts]}),
        json!({"name": "", "time": "ts", "fields": [ts]}),
        json!({"name": "has space", "time": "ts", "fields": [ts]}),
        json!({"name": "x".repeat(300), "time": "ts", "fields": [ts]}),
        json!({"name": "t1", "time": "nope", "fields": [ts]}),
        json!({"name": "t1", "key": "nope", "time": "ts", "fields": [ts]}),
        json!({"name": "t1", "time": "ts", "fields": [ts], "extra": 1}),
        f(json!([{"name": "ts", "type": "nope"}])),
        f(json!([{"name": "ts", "type": "string"}])),
        f(json!([{"name": "ts", "type": "timestamp", "optional": true}])),
        f(json!([{"name": "ts", "type": "timestamp", "default": 5}])),
        f(json!([ts, {"name": "a", "type": "int", "optional": true, "default": "x"}])),
        f(json!([ts, ts])),
        f(json!([ts, {"name": "a"}])),
        f(json!([ts, {"name": "a", "type": "int", "wat": 1}])),
        f(json!([ts, {"name": "a", "type": "vector<0>"}])),
        f(json!([ts, {"name": "a", "type": "list<nope>"}])),
        json!([]),
        json!(5),
        json!(null),
    ];
    for b in bad {
        v.push(case(
            format!("bad topic {b}"),
            "POST",
            "/v1/topics",
            Some("application/json"),
            b.to_string(),
            400,
            "bad_topic",
        ));
    }
    v.push(case(
        "nested topic",
        "POST",
        "/v1/topics",
        Some("application/json"),
        "[".repeat(100_000),
        400,
        "bad_topic",
    ));
    v.push(case(
        "topic utf-8",
        "POST",
        "/v1/topics",
        Some("application/json"),
        &b"{\"name\":\"\xff\",\"time\":\"ts\",\"fields\":[]}"[..],
        400,
        "bad_topic",
    ));
    v.push(case(
        "topic over body limit",
        "POST",
        "/v1/topics",
        Some("application/json"),
        format!("{{\"name\":\"{}\"}}", "n".repeat(MAX_BODY + 1)),
        413,
        "too_large",
    ));
    for ct in [
        None,
        Some("text/plain"),
        Some("application/yaml"),
        Some("application/x-ndjson"),
    ] {
        v.push(case(
            format!("topic content type {ct:?}"),
            "POST",
            "/v1/topics",
            ct,
            good.clone(),
            415,
            "unsupported_media_type",
        ));
    }
    // a different declaration of an existing topic
    let mut other = clicks_topic("clicks");
    other["key"] = json!(null);
    v.push(case(
        "conflicting topic",
        "POST",
        "/v1/topics",
        Some("application/json"),
        other.to_string(),
        409,
        "conflict",
    ));
    v
}

fn definition_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let yaml = window_yaml("hostile", "clicks");
    let def: Json = serde_yaml_ng::from_str(&yaml).unwrap();
    let text = def.to_string();
    for cut in (1..text.len()).step_by(9) {
        v.push(case(
            format!("truncated definition at {cut}"),
            "POST",
            "/v1/dataflows",
            Some("application/json"),
            &text[..cut],
            400,
            "bad_definition",
        ));
    }
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"just a string".to_vec(),
        b"- a\n- b\n".to_vec(),
        b"{{{{".to_vec(),
        b"name: [unclosed".to_vec(),
        b"\tname: tab".to_vec(),
        b"name: x\ninputs: 5\n".to_vec(),
        b"name: x\ninputs: []\n".to_vec(),
        b"name: x\n".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"name: \"\xff\"\ninputs: []\n".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "- ".repeat(50_000).into_bytes(),
        "{a: ".repeat(50_000).into_bytes(),
        b"a: &a [*a]\n".to_vec(),
        b"a: *nope\n".to_vec(),
        yaml.replace("kind: tumbling", "kind: wobbly").into_bytes(),
        yaml.replace("topic: clicks", "topic: missing").into_bytes(),
        yaml.replace("from: per_user", "from: nobody").into_bytes(),
        yaml.replace("fn: count", "fn: nope").into_bytes(),
        yaml.replace("size: 10s", "size: 0s").into_bytes(),
        yaml.replace("size: 10s", "size: ten").into_bytes(),
        yaml.replace("expr: amount", "expr: amount +").into_bytes(),
        yaml.replace("expr: amount", "expr: nope").into_bytes(),
        yaml.replace("name: hostile", "name: 9bad").into_bytes(),
        yaml.replace("input: w", "input: per_user").into_bytes(),
        yaml.replace("outputs:", "wher: 1\noutputs:").into_bytes(),
        format!("{yaml}topics:\n  - name: clicks\n    time: ts\n    fields:\n      - {{name: ts, type: int}}\n")
            .into_bytes(),
    ];
    for (i, g) in garbage.into_iter().enumerate() {
        for ct in ["application/yaml", "text/plain"] {
            v.push(case(
                format!("garbage definition {i} as {ct}"),
                "POST",
                "/v1/dataflows",
                Some(ct),
                g.clone(),
                400,
                "bad_definition",
            ));
        }
    }
    v.push(case(
        "definition over body limit",
        "POST",
        "/v1/dataflows",
        Some("application/yaml"),
        format!("# {}\n{yaml}", "z".repeat(MAX_BODY)),
        413,
        "too_large",
    ));
    for ct in [
        None,
        Some("application/x-ndjson"),
        Some("image/png"),
        Some("yaml"),
    ] {
        v.push(case(
            format!("definition content type {ct:?}"),
            "POST",
            "/v1/dataflows",
            ct,
            yaml.clone(),
            415,
            "unsupported_media_type",
        ));
    }
    v.push(case(
        "existing dataflow",
        "POST",
        "/v1/dataflows",
        Some("application/yaml"),
        window_yaml("win", "clicks"),
        409,
        "conflict",
    ));
    v
}

fn route_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for p in [
        "/",
        "/v1",
        "/v2/topics",
        "/v1/nope",
        "/v1/topics/clicks/events/extra",
        "/v1/topics/nope",
        "/v1/topics/nope/events",
        "/v1/dataflows/nope",
        "/v1/dataflows/nope/outputs/out",
        "/v1/dataflows/win/outputs/nope",
        "/v1/dataflows/win/outputs",
        "/healthz/x",
        "/metrics/",
        "/v1/topics//events",
    ] {
        v.push(case(
            format!("GET {p}"),
            "GET",
            p,
            None,
            "",
            404,
            "not_found",
        ));
    }
    for (m, p) in [
        ("PUT", "/v1/topics"),
        ("DELETE", "/v1/topics"),
        ("PATCH", "/v1/topics/clicks"),
        ("DELETE", "/v1/topics/clicks"),
        ("PUT", "/v1/topics/clicks/events"),
        ("DELETE", "/v1/topics/clicks/events"),
        ("PUT", "/v1/dataflows"),
        ("DELETE", "/v1/dataflows"),
        ("POST", "/v1/dataflows/win"),
        ("PUT", "/v1/dataflows/win"),
        ("POST", "/v1/dataflows/win/outputs/out"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
        ("POST", "/readyz"),
    ] {
        v.push(case(
            format!("{m} {p}"),
            m,
            p,
            None,
            "",
            405,
            "method_not_allowed",
        ));
    }
    for q in [
        "format=xml",
        "format=",
        "format=SSE",
        "format=sse&format=ndjson",
        "format=%FF",
    ] {
        for p in ["/v1/topics/clicks/events", "/v1/dataflows/win/outputs/out"] {
            v.push(case(
                format!("GET {p}?{q}"),
                "GET",
                &format!("{p}?{q}"),
                None,
                "",
                400,
                "bad_request",
            ));
        }
    }
    for p in [
        "/v1/topics/%FF",
        "/v1/dataflows/%FF%FE",
        "/v1/topics/%FF/events",
    ] {
        v.push(case(
            format!("GET {p}"),
            "GET",
            p,
            None,
            "",
            400,
            "bad_request",
        ));
    }
    v
}

async fn run_group(http: &reqwest::Client, node: &NodeProc, cases: Vec<Case>) -> usize {
    let n = cases.len();
    let mut failures = Vec::new();
    for c in cases {
        let mut req = http.request(c.method.clone(), node.url(&c.path));
        if let Some(ct) = &c.content_type {
            req = req.header("content-type", ct.as_str());
        }
        let resp = match req.body(c.body).send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: transport error {e}", c.label));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap_or_default();
        let j: Option<Json> = serde_json::from_slice(&body).ok();
        let ok = status == c.status
            && ct.starts_with("application/json")
            && j.as_ref().is_some_and(|j| {
                j["code"] == c.code
                    && j["message"].as_str().is_some_and(|m| !m.is_empty())
                    && j.get("details").is_some()
                    && c.index.is_none_or(|i| j["details"]["index"] == i)
            });
        if !ok {
            failures.push(format!(
                "{}: want {} {}, got {status} {ct} {}",
                c.label,
                c.status,
                c.code,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    healthy(http, node).await;
    n
}

async fn healthy(http: &reqwest::Client, node: &NodeProc) {
    let r = http
        .get(node.url("/healthz"))
        .send()
        .await
        .expect("node up");
    assert_eq!(r.status(), 200);
}

async fn published(http: &reqwest::Client, node: &NodeProc) -> u64 {
    let t: Json = http
        .get(node.url("/v1/topics/clicks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["published"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_documented_errors() {
    let node = NodeProc::start(&[
        "--max-body-bytes",
        &MAX_BODY.to_string(),
        "--max-event-bytes",
        &MAX_EVENT.to_string(),
    ]);
    let http = reqwest::Client::new();
    let r = http
        .post(node.url("/v1/topics"))
        .json(&clicks_topic("clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(node.url("/v1/dataflows"))
        .header("content-type", "application/yaml")
        .body(window_yaml("win", "clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // a subscriber on the output, and a baseline in the first window (not closed yet)
    let out = http
        .get(node.url("/v1/dataflows/win/outputs/out"))
        .send()
        .await
        .unwrap();
    let r = http
        .post(node.url(EVENTS))
        .header("content-type", "application/x-ndjson")
        .body("{\"user\":\"ann\",\"ts\":1000}\n{\"user\":\"ann\",\"ts\":2000}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let base = published(&http, &node).await;
    assert_eq!(base, 2);

    // slow and silent connections stay open the whole time
    let silent = TcpStream::connect(node.addr).unwrap();
    let addr = node.addr;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter() {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let mut total = 0;
    total += run_group(&http, &node, publish_cases()).await;
    assert_eq!(
        published(&http, &node).await,
        base,
        "a rejected batch was applied"
    );
    total += run_group(&http, &node, topic_cases()).await;
    total += run_group(&http, &node, definition_cases()).await;
    total += run_group(&http, &node, route_cases()).await;
    let dfs: Json = http
        .get(node.url("/v1/dataflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        dfs.as_array().unwrap().len(),
        1,
        "a bad definition was installed: {dfs}"
    );
    let topics: Json = http
        .get(node.url("/v1/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        topics
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !["t1", "fresh", "missing"].contains(&t["name"].as_str().unwrap())),
        "{topics}"
    );

    // raw TCP nonsense: the HTTP layer refuses it with 400 (or closes); the node stays up
    let nonsense: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x00\x01\x02\x03\x04\x05\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"POST /v1/topics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"POST /v1/topics/clicks/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200_000)).into_bytes(),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(200_000)).into_bytes(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\xff\xfe: y\r\n\r\n".to_vec(),
    ];
    let raw_n = nonsense.len();
    for n in nonsense {
        let (status, body) = raw_exchange(node.addr, &n);
        assert!(
            matches!(status, 0 | 400 | 404 | 414 | 415 | 431 | 505),
            "{:?} -> {status} {body}",
            String::from_utf8_lossy(&n[..n.len().min(40)])
        );
        if !body.is_empty() && status != 0 && !body.starts_with("0\r\n") {
            let j: Json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body:?}"));
            assert!(j["code"].is_string());
        }
    }
    total += raw_n;
    healthy(&http, &node).await;
    // a truncated chunked publish changes nothing either
    let (status, _) = raw_exchange(
        node.addr,
        format!(
            "POST {EVENTS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{GOOD}\n"
        )
        .as_bytes(),
    );
    let _ = status;
    assert_eq!(published(&http, &node).await, base);
    assert!(total >= 200, "only {total} cases");

    // the slow and the silent connection did not stop anyone
    let t = Instant::now();
    for _ in 0..20 {
        healthy(&http, &node).await;
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(silent);
    slow.join().unwrap();

    // the output saw nothing of the rejected batches (they held events that would have
    // closed the first window); a real closing event now shows exactly the baseline
    let r = http
        .post(node.url(EVENTS))
        .header("content-type", "application/x-ndjson")
        .body("{\"user\":\"zed\",\"ts\":100000}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = out.bytes_stream();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !buf.ends_with(b"\n") || buf.is_empty() {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(c))) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    // give any stray update a moment to arrive
    if let Ok(Some(Ok(c))) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        buf.extend_from_slice(&c);
    }
    let lines: Vec<Json> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["diff"], 1);
    assert_eq!(lines[0]["row"]["key"], "ann", "{lines:?}");
    assert_eq!(lines[0]["row"]["clicks"], 2, "{lines:?}");
    assert_eq!(published(&http, &node).await, base + 1);
    healthy(&http, &node).await;
}
