//! Reads the server's Prometheus-style `/metrics` page (plain HTTP/1.0 GET over
//! loopback, no HTTP library needed) so a run can report what changed in it, such as
//! how many messages each group commit carried.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest metrics page read (bounded memory against a misbehaving endpoint).
const MAX_PAGE: u64 = 4 * 1024 * 1024;

/// Fetches and parses `http://ADDR/metrics`: sample name (with labels) → value.
pub async fn fetch(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let page = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.take(MAX_PAGE).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    })
    .await
    .context("metrics timeout")?
    .with_context(|| format!("metrics from {addr}"))?;
    let text = String::from_utf8_lossy(&page);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("metrics: no HTTP header end");
    };
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!("metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(parse(body))
}

/// Parses the text exposition format, skipping comments and anything unparsable.
pub fn parse(body: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The value follows the last space outside the labels; an optional timestamp
        // would follow it, which this server does not emit.
        let split_at = match line.rfind('}') {
            Some(i) => i + 1,
            None => line.find(char::is_whitespace).unwrap_or(line.len()),
        };
        let (name, rest) = line.split_at(split_at);
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            m.insert(name.trim().to_string(), v);
        }
    }
    m
}

/// Samples whose value changed between `before` and `after`, as after − before.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_text() {
        let m = parse("# HELP x y\nx_total 5\nlat_bucket{le=\"0.5\",a=\"b c\"} 3.5\n\nbad\n");
        assert_eq!(m.get("x_total"), Some(&5.0));
        assert_eq!(m.get("lat_bucket{le=\"0.5\",a=\"b c\"}"), Some(&3.5));
        assert_eq!(m.len(), 2);
        let mut after = m.clone();
        after.insert("x_total".into(), 9.0);
        assert_eq!(
            delta(&m, &after).into_iter().collect::<Vec<_>>(),
            vec![("x_total".into(), 4.0)]
        );
    }
}
