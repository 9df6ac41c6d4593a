//! `docs/openapi.yaml` against the real router: every route of `engine/src/http/mod.rs` is
//! documented, and every documented operation answers on a live node with a status the
//! document lists for it.

mod node_common;

use std::collections::BTreeSet;

use node_common::{clicks_topic, window_yaml, NodeProc};
use serde_json::Value as Json;

const DOC: &str = include_str!("../../docs/openapi.yaml");
const ROUTER: &str = include_str!("../src/http/mod.rs");
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn doc() -> Json {
    serde_yaml_ng::from_str(DOC).expect("docs/openapi.yaml parses")
}

/// (path, method) pairs the router declares, parsed from its source.
fn router_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let parts: Vec<&str> = ROUTER.split(".route(").skip(1).collect();
    assert!(parts.len() >= 9, "the router source changed shape");
    for part in parts {
        let part = part.trim_start();
        let rest = part.strip_prefix('"').expect("route path literal");
        let (path, handlers) = rest.split_once('"').unwrap();
        // the handlers end where the next builder call starts
        let handlers = handlers
            .split(".fallback(")
            .next()
            .unwrap()
            .split(".layer(")
            .next()
            .unwrap();
        let mut found = false;
        for m in METHODS {
            let pat = format!("{m}(");
            let hit = handlers.match_indices(&pat).any(|(i, _)| {
                i == 0
                    || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && handlers.as_bytes()[i - 1] != b':'
                        && handlers.as_bytes()[i - 1] != b'_'
            });
            if hit {
                out.insert((path.to_string(), m.to_string()));
                found = true;
            }
        }
        assert!(found, "no method found for route {path}: {handlers}");
    }
    out
}

fn documented() -> BTreeSet<(String, String)> {
    let d = doc();
    let mut out = BTreeSet::new();
    for (path, item) in d["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

#[test]
fn document_is_well_formed() {
    let d = doc();
    assert!(d["openapi"].as_str().unwrap().starts_with("3.0"));
    // every $ref resolves
    fn refs(v: &Json, out: &mut Vec<String>) {
        match v {
            Json::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap().to_string());
                    } else {
                        refs(x, out);
                    }
                }
            }
            Json::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&d, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let ptr = r.strip_prefix('#').expect("local ref");
        assert!(d.pointer(ptr).is_some(), "unresolved {r}");
    }
    // every operation has responses, path parameters are declared
    for (path, item) in d["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {path}"
            );
        }
        let declared: usize = item["parameters"].as_array().map_or(0, Vec::len);
        assert_eq!(declared, path.matches('{').count(), "parameters of {path}");
    }
    for s in ["Topic", "Dataflow", "Error", "Accepted"] {
        assert!(d["components"]["schemas"][s].is_object(), "schema {s}");
    }
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routes = router_routes();
    let docs = documented();
    let missing: Vec<_> = routes.difference(&docs).collect();
    assert!(missing.is_empty(), "routes without docs: {missing:?}");
    let extra: Vec<_> = docs.difference(&routes).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

fn listed(d: &Json, path: &str, method: &str) -> BTreeSet<u16> {
    d["paths"][path][method]["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_operations_answer_as_documented() {
    let node = NodeProc::start(&[]);
    let http = reqwest::Client::new();
    let d = doc();
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

    // A view named like the dataflow, with an entry under `k`, for the KV routes.
    let r = http
        .post(node.url("/v1/dataflows"))
        .header("content-type", "application/yaml")
        .body("name: kvw\ninputs: [{id: c, topic: clicks, watermark: {idle_timeout: 50ms}}]\nnodes: [{id: p, op: kv_put, input: c, view: win}]\noutputs: [{name: out, from: p}]\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(node.url("/v1/topics/clicks/events"))
        .header("content-type", "application/x-ndjson")
        .body("{\"user\":\"k\",\"ts\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = http.get(node.url("/v1/kv/win/k")).send().await.unwrap();
        if r.status() == 200 {
            let v: Json = r.json().await.unwrap();
            assert_eq!(v["value"]["user"], "k", "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the view was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut checked = 0;
    let mut serial = 0;
    // DELETE last so the dataflow exists for the others
    let mut ops: Vec<(String, String)> = documented().into_iter().collect();
    // Deletes of inner objects (a point) before their containers (a collection).
    ops.sort_by_key(|(p, m)| {
        let delete = m == "delete";
        (delete, if delete { usize::MAX - p.len() } else { 0 })
    });
    for (path, method) in ops {
        let listed = listed(&d, &path, &method);
        for (existing, topic, dataflow, output) in [
            (true, "clicks", "win", "out"),
            (false, "nope", "nope", "nope"),
        ] {
            let concrete = path
                .replace("{topic}", topic)
                .replace("{dataflow}", dataflow)
                .replace("{output}", output)
                .replace("{view}", dataflow)
                .replace("{name}", dataflow)
                .replace("{collection}", dataflow)
                .replace("{key}", "k");
            if !existing && concrete == path {
                continue;
            }
            let op = &d["paths"][&path][&method];
            // one request per documented body type (or one without a body)
            let types: Vec<String> = op["requestBody"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_else(|| vec![String::new()]);
            for ct in types {
                let mut req =
                    http.request(method.to_uppercase().parse().unwrap(), node.url(&concrete));
                if !ct.is_empty() {
                    serial += 1;
                    let df = format!("df{serial}");
                    let body = match (path.as_str(), ct.as_str()) {
                        ("/v1/topics", _) => clicks_topic("clicks").to_string(),
                        ("/v1/topics/{topic}/watermark", _) => "{\"time\": 1000}".to_string(),
                        ("/v1/vectors", _) => "{\"name\": \"win\", \"dim\": 3}".to_string(),
                        ("/v1/vectors/{collection}/points", _) => {
                            "[{\"key\": \"k\", \"vector\": [1, 0, 0]}]".to_string()
                        }
                        ("/v1/vectors/{collection}/search", _) => {
                            "{\"vector\": [1, 0, 0], \"k\": 1}".to_string()
                        }
                        ("/v1/dataflows", "application/json") => {
                            serde_yaml_ng::from_str::<Json>(&window_yaml(&df, "clicks"))
                                .unwrap()
                                .to_string()
                        }
                        ("/v1/dataflows", _) => window_yaml(&df, "clicks"),
                        (_, "application/json") => "[{\"user\":\"a\",\"ts\":1}]".to_string(),
                        (_, "application/x-ndjson" | "application/jsonl") => {
                            "{\"user\":\"a\",\"ts\":1}\n".to_string()
                        }
                        other => panic!("no example body for {other:?}"),
                    };
                    req = req.header("content-type", ct.as_str()).body(body);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                assert!(
                    listed.contains(&status),
                    "{method} {concrete} answered {status}, documented {listed:?}"
                );
                // This node runs alone: its cluster routes answer 404 (the cluster tests run
                // them on real clusters).
                if existing && !path.starts_with("/v1/cluster") {
                    assert!(
                        status < 400,
                        "{method} {concrete} answered {status} for existing objects"
                    );
                }
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let key = status.to_string();
                let mut doc_resp = op["responses"][&key].clone();
                if let Some(r) = doc_resp["$ref"].as_str() {
                    doc_resp = d.pointer(r.strip_prefix('#').unwrap()).unwrap().clone();
                }
                match doc_resp["content"].as_object() {
                    Some(types) => {
                        let base = ct.split(';').next().unwrap().trim();
                        assert!(
                            types.contains_key(base),
                            "{method} {concrete}: {status} with {ct}, documented {:?}",
                            types.keys().collect::<Vec<_>>()
                        );
                    }
                    None => assert!(status == 204, "{method} {concrete}: undocumented body"),
                }
                if status >= 400 {
                    let j: Json = resp.json().await.unwrap();
                    let codes = &d["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
                    assert!(
                        codes.as_array().unwrap().contains(&j["code"]),
                        "{method} {concrete}: {j}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");
}
