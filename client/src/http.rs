//! The HTTP client: every `/v1` operation, with the node's JSON errors as typed errors.

use futures_util::StreamExt;
use serde_json::Value as Json;
use thiserror::Error;

/// A failed call: the node's error answer, or why it could not be reached.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{code} ({status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Json,
    },
    #[error("cannot reach the node at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("the node answered something that is not JSON: {0}")]
    BadAnswer(String),
}

/// A connection to one node's HTTP front door.
#[derive(Clone, Debug)]
pub struct HttpClient {
    base: String,
    http: reqwest::Client,
}

impl HttpClient {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str) -> HttpClient {
        HttpClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: String,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        match serde_json::from_slice::<Json>(&body) {
            Ok(j) => Err(ClientError::Api {
                status,
                code: j["code"].as_str().unwrap_or("unknown").to_string(),
                message: j["message"].as_str().unwrap_or("").to_string(),
                details: j["details"].clone(),
            }),
            Err(_) => Err(ClientError::BadAnswer(
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder, url: String) -> Result<Json, ClientError> {
        let resp = self.send(req, url).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base.clone(),
                source,
            })?;
        if body.is_empty() {
            return Ok(Json::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|_| ClientError::BadAnswer(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Every topic.
    pub async fn topics(&self) -> Result<Json, ClientError> {
        let url = self.url("/v1/topics");
        self.json(self.http.get(&url), url).await
    }

    /// Creates a topic from its JSON declaration.
    pub async fn create_topic(&self, decl: &Json) -> Result<Json, ClientError> {
        let url = self.url("/v1/topics");
        self.json(self.http.post(&url).json(decl), url).await
    }

    /// Publishes NDJSON events; returns how many were accepted.
    pub async fn publish_ndjson(&self, topic: &str, ndjson: Vec<u8>) -> Result<u64, ClientError> {
        let url = self.url(&format!("/v1/topics/{topic}/events"));
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(ndjson);
        let j = self.json(req, url).await?;
        j["accepted"]
            .as_u64()
            .ok_or_else(|| ClientError::BadAnswer(j.to_string()))
    }

    /// Raises the watermark of every input on `topic` to `time` (closes windows before it).
    pub async fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/topics/{topic}/watermark"));
        self.json(
            self.http
                .post(&url)
                .json(&serde_json::json!({ "time": time })),
            url,
        )
        .await
        .map(|_| ())
    }

    /// Node to node: moves the watermark on this node only (the node the user asked does
    /// every node).
    pub async fn advance_watermark_local(&self, topic: &str, time: u64) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/topics/{topic}/watermark?local=true"));
        self.json(
            self.http
                .post(&url)
                .json(&serde_json::json!({ "time": time })),
            url,
        )
        .await
        .map(|_| ())
    }

    /// Submits a definition (YAML or JSON text).
    pub async fn submit(&self, text: &str) -> Result<Json, ClientError> {
        let url = self.url("/v1/dataflows");
        let kind = if text.trim_start().starts_with('{') {
            "application/json"
        } else {
            "application/yaml"
        };
        self.json(
            self.http
                .post(&url)
                .header("content-type", kind)
                .body(text.to_string()),
            url,
        )
        .await
    }

    /// Every dataflow with its counters.
    pub async fn dataflows(&self) -> Result<Json, ClientError> {
        let url = self.url("/v1/dataflows");
        self.json(self.http.get(&url), url).await
    }

    /// One dataflow with its counters and watermarks.
    pub async fn dataflow(&self, name: &str) -> Result<Json, ClientError> {
        let url = self.url(&format!("/v1/dataflows/{name}"));
        self.json(self.http.get(&url), url).await
    }

    /// Drops a dataflow.
    pub async fn drop_dataflow(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/dataflows/{name}"));
        self.send(self.http.delete(&url), url).await.map(|_| ())
    }

    /// The cluster as the node sees it (`GET /v1/cluster`); `None` when the node runs alone
    /// (it answers 404), so callers can show a single node without treating it as an error.
    pub async fn cluster(&self) -> Result<Option<Json>, ClientError> {
        let url = self.url("/v1/cluster");
        match self.json(self.http.get(&url), url).await {
            Ok(j) => Ok(Some(j)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hands the node's shards to the other members (`POST /v1/cluster/leave`); answers once
    /// the node owns none. A node that runs alone refuses with 404 `not_found`.
    pub async fn leave_cluster(&self) -> Result<Json, ClientError> {
        let url = self.url("/v1/cluster/leave");
        self.json(self.http.post(&url), url).await
    }

    /// The node's Prometheus metrics text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url("/metrics");
        let resp = self.send(self.http.get(&url), url.clone()).await?;
        resp.text()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// Streams NDJSON lines of a subscription (`topic` or `dataflow/output`) to `each` until
    /// the stream ends or `each` returns false.
    pub async fn subscribe(
        &self,
        target: &str,
        mut each: impl FnMut(Json) -> bool,
    ) -> Result<(), ClientError> {
        let path = match target.split_once('/') {
            Some((df, out)) => format!("/v1/dataflows/{df}/outputs/{out}"),
            None => format!("/v1/topics/{target}/events"),
        };
        let url = self.url(&path);
        let resp = self.send(self.http.get(&url), url.clone()).await?;
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.trim_ascii().is_empty() {
                    continue;
                }
                let j: Json = serde_json::from_slice(&line).map_err(|_| {
                    ClientError::BadAnswer(String::from_utf8_lossy(&line).into_owned())
                })?;
                if !each(j) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
