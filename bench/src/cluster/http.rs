//! A minimal HTTP/1.1 exchange for the cluster routes [`HttpClient`] lacks, and topic creation
//! over HTTP; the raw protocol handling (status, chunked bodies) stays out of the parts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::member::Member;
use super::{POLL, TOPIC};

/// One HTTP/1.1 exchange on a fresh connection (the cluster routes are not in
/// [`HttpClient`]); returns the status and the body as JSON.
pub(super) async fn http_call(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, Json)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(90), exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no answer within 90 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path} on {addr}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path} on {addr}: no status in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    let json = if body.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok((status, json))
}

/// The body of a chunked HTTP answer.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}

/// Creates the benchmark topic through `admin` and waits until every node knows it.
pub(super) async fn create_topic(admin: &Member, all: &[&Member]) -> Result<()> {
    let mut decl = starling_bench::publish::bench_topic();
    decl["name"] = json!(TOPIC);
    HttpClient::new(&admin.base())
        .create_topic(&decl)
        .await
        .with_context(|| format!("creating topic {TOPIC} on {}", admin.name))?;
    let start = Instant::now();
    for m in all {
        loop {
            let topics = HttpClient::new(&m.base()).topics().await?;
            if topics.to_string().contains(&format!("\"{TOPIC}\"")) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("topic {TOPIC} did not reach {} within 30 s", m.name);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        let body = b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"{\"a\":1}");
    }
}
