//! The node's HTTP front door, driven as a real process: topics, dataflows, publishing,
//! live streams (NDJSON and SSE), metrics, graceful shutdown and the CLI client commands.

mod node_common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use node_common::{cli, clicks_topic, metric_declared, metric_sum, window_yaml, NodeProc};
use serde_json::{json, Value as Json};
use starling_node::client::http::{ClientError, HttpClient};

/// Reads a streaming response line by line (NDJSON, or the `data:` lines of SSE) until
/// `done` says so or `limit` passes; returns the JSON lines read.
async fn read_stream(
    resp: reqwest::Response,
    limit: Duration,
    mut done: impl FnMut(&[Json]) -> bool,
) -> Vec<Json> {
    let sse = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().starts_with("text/event-stream"))
        .unwrap_or(false);
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done(&out) {
            return out;
        }
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => return out,
        };
        buf.extend_from_slice(&next);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8(line).unwrap();
            let line = line.trim();
            let payload = if sse {
                match line.strip_prefix("data: ") {
                    Some(p) => p,
                    None => continue,
                }
            } else {
                line
            };
            if payload.is_empty() {
                continue;
            }
            out.push(serde_json::from_str(payload).unwrap());
        }
    }
}

/// Output stream lines as consolidated `row` values (diffs summed, zeros dropped).
fn consolidated(lines: &[Json]) -> Vec<(String, i64)> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        if l.get("error").is_some() {
            continue;
        }
        *m.entry(l["row"].to_string()).or_insert(0) += l["diff"].as_i64().unwrap();
    }
    m.into_iter().filter(|(_, d)| *d != 0).collect()
}

fn ndjson(events: &[Json]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_dataflows_lifecycle() {
    let node = NodeProc::start(&[]);
    let http = reqwest::Client::new();
    let client = HttpClient::new(&node.base());

    // health
    let r = http.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // create a topic: 201, identical again: 200, different: 409
    let decl = clicks_topic("clicks");
    let r = http
        .post(node.url("/v1/topics"))
        .json(&decl)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Json = r.json().await.unwrap();
    assert_eq!(t["name"], "clicks");
    assert_eq!(t["key"], "user");
    assert_eq!(t["time"], "ts");
    assert_eq!(t["published"], 0);
    let r = http
        .post(node.url("/v1/topics"))
        .json(&decl)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut other = decl.clone();
    other["fields"][2]["type"] = json!("float");
    other["fields"][2]["default"] = json!(1.0);
    let r = http
        .post(node.url("/v1/topics"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Json = r.json().await.unwrap();
    assert_eq!(e["code"], "conflict");
    // the client sees the same
    match client.create_topic(&other).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (409, "conflict"))
        }
        other => panic!("{other:?}"),
    }
    client.create_topic(&clicks_topic("views")).await.unwrap();

    // list and describe
    let list = client.topics().await.unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"clicks") && names.contains(&"views"),
        "{list}"
    );
    let r = http
        .get(node.url("/v1/topics/clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Json = r.json().await.unwrap();
    assert_eq!(t["fields"].as_array().unwrap().len(), 3);
    let r = http.get(node.url("/v1/topics/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Json>().await.unwrap()["code"], "not_found");

    // submit YAML (with the HTTP client) and JSON (with reqwest)
    let info = client
        .submit(&window_yaml("w_yaml", "clicks"))
        .await
        .unwrap();
    assert_eq!(info["name"], "w_yaml");
    let def: Json = serde_yaml_ng::from_str(&window_yaml("w_json", "views")).unwrap();
    let r = http
        .post(node.url("/v1/dataflows"))
        .header("content-type", "application/json")
        .body(def.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let d: Json = r.json().await.unwrap();
    assert_eq!(d["name"], "w_json");
    assert_eq!(d["outputs"], json!(["out"]));
    // same name again: 409
    let r = http
        .post(node.url("/v1/dataflows"))
        .header("content-type", "application/yaml")
        .body(window_yaml("w_yaml", "clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Json>().await.unwrap()["code"], "conflict");

    // publish something so counters and watermarks move
    let n = client
        .publish_ndjson(
            "clicks",
            ndjson(&[
                json!({"user": "ann", "ts": 1000}),
                json!({"user": "bob", "ts": 25000, "amount": 4}),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    // list and describe dataflows: counters and watermarks present
    let list = client.dataflows().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let start = Instant::now();
    loop {
        let d = client.dataflow("w_yaml").await.unwrap();
        for k in [
            "window_state",
            "late_events",
            "dead_letters",
            "output_updates",
        ] {
            assert!(d["counters"][k].is_number(), "{k} in {d}");
        }
        let input = &d["inputs"][0];
        assert_eq!(input["topic"], "clicks");
        assert!(input["watermark"].is_number(), "{d}");
        if input["watermark"].as_u64() == Some(25000) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // drop: 204, then 404 everywhere
    let r = http
        .delete(node.url("/v1/dataflows/w_json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for req in [
        http.get(node.url("/v1/dataflows/w_json")),
        http.delete(node.url("/v1/dataflows/w_json")),
        http.get(node.url("/v1/dataflows/w_json/outputs/out")),
        http.get(node.url("/v1/dataflows/w_yaml/outputs/nope")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Json>().await.unwrap()["code"], "not_found");
    }
    match client.dataflow("w_json").await {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    client.drop_dataflow("w_yaml").await.unwrap();
    assert_eq!(client.dataflows().await.unwrap(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_output_streams_exact_results_and_metrics_move() {
    let node = NodeProc::start(&[]);
    let http = reqwest::Client::new();
    let client = HttpClient::new(&node.base());
    client.create_topic(&clicks_topic("clicks")).await.unwrap();
    client.submit(&window_yaml("win", "clicks")).await.unwrap();

    let before = client.metrics().await.unwrap();

    // three subscribers: output as NDJSON, output as SSE (Accept and ?format), the topic
    let nd = http
        .get(node.url("/v1/dataflows/win/outputs/out"))
        .send()
        .await
        .unwrap();
    assert_eq!(nd.status(), 200);
    assert!(nd.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-ndjson"));
    let sse = http
        .get(node.url("/v1/dataflows/win/outputs/out"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let sse_q = http
        .get(node.url("/v1/dataflows/win/outputs/out?format=sse"))
        .send()
        .await
        .unwrap();
    assert!(sse_q.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let topic_sse = http
        .get(node.url("/v1/topics/clicks/events?format=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(topic_sse.status(), 200);
    let topic_nd = http
        .get(node.url("/v1/topics/clicks/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(topic_nd.status(), 200);

    let metrics = client.metrics().await.unwrap();
    assert!(metric_sum(&metrics, "starling_active_subscriptions").unwrap() >= 5.0);

    // the documented tumbling example, then an event that closes both windows
    let events = [
        json!({"user": "ann", "ts": 1000, "amount": 1}),
        json!({"user": "bob", "ts": 2000, "amount": 5}),
        json!({"user": "ann", "ts": 9999, "amount": 2}),
        json!({"user": "ann", "ts": 10000, "amount": 7}),
    ];
    // half as NDJSON, half as a JSON array, one as application/jsonl
    let n = client
        .publish_ndjson("clicks", ndjson(&events[..2]))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let r = http
        .post(node.url("/v1/topics/clicks/events"))
        .json(&json!([events[2]]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Json>().await.unwrap(), json!({"accepted": 1}));
    let r = http
        .post(node.url("/v1/topics/clicks/events"))
        .header("content-type", "application/jsonl")
        .body(format!("{}\n", events[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Json>().await.unwrap(), json!({"accepted": 1}));
    let closer = json!({"user": "zed", "ts": 100000});
    client
        .publish_ndjson("clicks", ndjson(&[closer]))
        .await
        .unwrap();

    let expected = |rows: &[(String, i64)]| rows.len() == 3;
    let limit = Duration::from_secs(30);
    let (a, b, c) = tokio::join!(
        read_stream(nd, limit, |l| expected(&consolidated(l))),
        read_stream(sse, limit, |l| expected(&consolidated(l))),
        read_stream(sse_q, limit, |l| expected(&consolidated(l))),
    );
    let rows = consolidated(&a);
    let text: Vec<String> = rows.iter().map(|(r, d)| format!("{r}x{d}")).collect();
    assert_eq!(
        text,
        vec![
            r#"{"clicks":1,"key":"bob","spent":5,"window_end":10000,"window_start":0}x1"#,
            r#"{"clicks":1,"key":"ann","spent":7,"window_end":20000,"window_start":10000}x1"#,
            r#"{"clicks":2,"key":"ann","spent":3,"window_end":10000,"window_start":0}x1"#,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "ndjson lines: {a:?}"
    );
    assert_eq!(consolidated(&b), rows, "sse lines: {b:?}");
    assert_eq!(consolidated(&c), rows, "sse ?format lines: {c:?}");
    for l in &a {
        assert!(l["time"].is_number() && l["event_time"].is_number(), "{l}");
    }

    // the topic subscribers saw every event, in order
    let (t1, t2) = tokio::join!(
        read_stream(topic_sse, limit, |l| l.len() >= 5),
        read_stream(topic_nd, limit, |l| l.len() >= 5),
    );
    for lines in [&t1, &t2] {
        let users: Vec<&str> = lines
            .iter()
            .map(|l| l["event"]["user"].as_str().unwrap())
            .collect();
        assert_eq!(users, ["ann", "bob", "ann", "ann", "zed"], "{lines:?}");
        assert_eq!(lines[0]["event"]["amount"], 1);
        assert_eq!(lines[0]["time"], 1000);
    }

    // a bad event and a late event move their counters
    let r = http
        .post(node.url("/v1/topics/clicks/events"))
        .header("content-type", "application/x-ndjson")
        .body("{\"user\": \"ann\", \"ts\": 1}\n{\"user\": 5, \"ts\": 1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Json = r.json().await.unwrap();
    assert_eq!(e["code"], "bad_event");
    assert_eq!(e["details"]["index"], 1);
    client
        .publish_ndjson("clicks", ndjson(&[json!({"user": "late", "ts": 5})]))
        .await
        .unwrap();
    let start = Instant::now();
    let after = loop {
        let m = client.metrics().await.unwrap();
        if metric_sum(&m, "starling_late_events_total") == Some(1.0) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in [
        "starling_events_in_total",
        "starling_rejected_events_total",
        "starling_late_events_total",
        "starling_watermark_lag_ms",
        "starling_request_duration_seconds",
        "starling_active_subscriptions",
        "starling_worker_busy_seconds_total",
    ] {
        assert!(metric_declared(&after, name), "{name} missing:\n{after}");
    }
    // six on clicks, and the late event on the dataflow's late topic
    assert_eq!(
        metric_sum(&after, "starling_events_in_total{topic=\"clicks\"}"),
        Some(6.0)
    );
    assert_eq!(
        metric_sum(&after, "starling_events_in_total{topic=\"win.late\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_sum(&after, "starling_rejected_events_total"),
        Some(1.0)
    );
    assert!(metric_sum(&after, "starling_watermark_lag_ms").is_some());
    let count = |m: &str| metric_sum(m, "starling_request_duration_seconds_count").unwrap_or(0.0);
    assert!(count(&after) > count(&before) + 5.0);
    let busy = |m: &str| metric_sum(m, "starling_worker_busy_seconds_total").unwrap_or(0.0);
    assert!(
        busy(&after) > busy(&before),
        "worker busy time did not move"
    );
    assert!(
        after.contains("route=\"/v1/topics/{topic}/events\""),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_with_an_open_stream() {
    let mut node = NodeProc::start(&[]);
    let http = reqwest::Client::new();
    let client = HttpClient::new(&node.base());
    client.create_topic(&clicks_topic("clicks")).await.unwrap();
    client.submit(&window_yaml("win", "clicks")).await.unwrap();
    let out = http
        .get(node.url("/v1/dataflows/win/outputs/out"))
        .send()
        .await
        .unwrap();
    let topic = http
        .get(node.url("/v1/topics/clicks/events?format=sse"))
        .send()
        .await
        .unwrap();
    client
        .publish_ndjson("clicks", ndjson(&[json!({"user": "a", "ts": 1})]))
        .await
        .unwrap();
    let reader = tokio::spawn(read_stream(topic, Duration::from_secs(20), |_| false));
    let reader2 = tokio::spawn(read_stream(out, Duration::from_secs(20), |_| false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    node.sigterm();
    let st = node
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("node did not exit; log:\n{}", node.log()));
    assert_eq!(st.code(), Some(0), "log:\n{}", node.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // the streams ended (with a closing error line), they did not hang
    let lines = reader.await.unwrap();
    assert_eq!(lines[0]["event"]["user"], "a", "{lines:?}");
    assert_eq!(lines.last().unwrap()["error"]["code"], "ended", "{lines:?}");
    let lines = reader2.await.unwrap();
    assert_eq!(lines.last().unwrap()["error"]["code"], "ended", "{lines:?}");
    assert!(t.elapsed() < Duration::from_secs(8));
}

#[test]
fn cli_commands_against_a_node() {
    let node = NodeProc::start(&[]);
    let base = node.base();
    let dir = tempfile::tempdir().unwrap();

    // --help everywhere exits 0; a usage error exits 2
    for cmd in [
        vec!["--help"],
        vec!["node", "--help"],
        vec!["submit", "--help"],
        vec!["publish", "--help"],
        vec!["subscribe", "--help"],
        vec!["topics", "--help"],
        vec!["dataflows", "--help"],
        vec!["status", "--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
    ] {
        let (code, out, _) = cli(&base, &cmd, None);
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("Usage"), "{cmd:?}: {out}");
    }
    for cmd in [
        vec!["bogus"],
        vec!["submit"],
        vec!["publish"],
        vec!["topics", "--nope"],
        vec!["node", "--http", "not-an-address"],
        vec![],
    ] {
        let (code, _, err) = cli(&base, &cmd, None);
        assert_eq!(code, 2, "{cmd:?}: {err}");
    }

    // submit a definition that declares its topic
    let def = dir.path().join("win.yaml");
    let topic = r#"topics:
  - name: clicks
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: int, optional: true, default: 1}
"#;
    std::fs::write(&def, format!("{}{topic}", window_yaml("win", "clicks"))).unwrap();
    let (code, out, err) = cli(&base, &["submit", def.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("win"), "{out}");

    // a subscriber on the output, as a process
    let mut sub = std::process::Command::new(node_common::BIN)
        .args(["subscribe", "win/out", "--node", &base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // publish FILE and publish - (stdin)
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        "{\"user\":\"ann\",\"ts\":1000}\n{\"user\":\"bob\",\"ts\":2000,\"amount\":5}\n",
    )
    .unwrap();
    let (code, out, err) = cli(
        &base,
        &["publish", "clicks", events.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("published 2 events"), "{out}");
    let (code, out, err) = cli(
        &base,
        &["publish", "clicks", "-"],
        Some(b"{\"user\":\"ann\",\"ts\":3000}\n{\"user\":\"zed\",\"ts\":50000}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("published 2 events"), "{out}");

    // a bad event: exit 1 naming its position
    let (code, _, err) = cli(
        &base,
        &["publish", "clicks", "-"],
        Some(b"{\"user\":\"ann\",\"ts\":3000}\n\n{\"user\":\"x\",\"ts\":\"soon\"}\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("event 1"), "{err}");
    let (code, _, err) = cli(&base, &["publish", "nope", events.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not_found"), "{err}");

    // topics, dataflows, status
    let (code, out, _) = cli(&base, &["topics"], None);
    assert_eq!(code, 0);
    assert!(out.contains("clicks") && out.contains("PUBLISHED"), "{out}");
    let clicks_line = out.lines().find(|l| l.starts_with("clicks ")).unwrap();
    assert!(clicks_line.trim_end().ends_with(" 4"), "{out}");
    let (code, out, _) = cli(&base, &["dataflows"], None);
    assert_eq!(code, 0);
    assert!(out.contains("win"), "{out}");
    let (code, out, _) = cli(&base, &["status"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("node: up") && out.contains("dataflows: 1"),
        "{out}"
    );

    // a node that is not there: exit 1
    let (code, _, err) = cli("http://127.0.0.1:1", &["status"], None);
    assert_eq!(code, 1, "{err}");

    // the subscriber printed the two closed windows; end it
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows.len() < 2 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            rows.push(serde_json::from_str::<Json>(&l).unwrap());
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let mut got: Vec<String> = rows.iter().map(|r| r["row"].to_string()).collect();
    got.sort();
    assert_eq!(got.len(), 2, "{rows:?}");
    assert!(
        got.contains(
            &r#"{"clicks":2,"key":"ann","spent":2,"window_end":10000,"window_start":0}"#
                .to_string()
        ),
        "{got:?}"
    );
    assert!(
        got.contains(
            &r#"{"clicks":1,"key":"bob","spent":5,"window_end":10000,"window_start":0}"#
                .to_string()
        ),
        "{got:?}"
    );
}
