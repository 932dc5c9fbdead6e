//! The client half of the binary: commands that talk to a running daemon's
//! REST API (`--api`, default http://127.0.0.1:9180). Problems the API
//! reports are printed as they are and make the command fail.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::abi::Mode;
use crate::api::BackendView;
use crate::config::{Backend, Config, HealthCheck, Protocol, Vip};
use crate::edit::BackendPatch;

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn problem_text(status: u16, body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("detail").is_some() => format!(
            "{} {}: {}",
            status,
            v["title"].as_str().unwrap_or(""),
            v["detail"].as_str().unwrap_or("")
        ),
        _ => format!("{status}: {}", body.trim()),
    }
}

/// A path segment or query value, percent-encoded: only RFC 3986's
/// unreserved characters and `:` (of IPv6 addresses) stay, so what a user
/// typed names one object: `web?` is `web%3F`, not `web` and a query, and
/// `web/backends/10.0.0.1` cannot reach a backend.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/v1/vips/NAME`, NAME encoded.
fn vip_path(name: &str) -> Result<String> {
    // URL parsing drops dot segments, even encoded ones (`%2E%2E`), so
    // these could only address another path; no VIP has such a name.
    if matches!(name, "" | "." | "..") {
        bail!(
            "no VIP is named {name:?}: a name is 1-63 of [A-Za-z0-9._-], \
             starting with a letter or digit"
        );
    }
    Ok(format!("/v1/vips/{}", encode(name)))
}

/// `/v1/vips/NAME/backends/ADDRESS`.
fn backend_path(vip: &str, address: IpAddr) -> Result<String> {
    Ok(format!(
        "{}/backends/{}",
        vip_path(vip)?,
        encode(&address.to_string())
    ))
}

/// Why a request got no answer; a URL ureq cannot use is the user's
/// mistake, not a daemon that is away.
fn transport_error(method: &str, url: &str, e: &ureq::Error) -> anyhow::Error {
    if is_bad_url(e) {
        anyhow!("{method} {url}: {e} (--api takes an http:// URL, like http://127.0.0.1:9180)")
    } else {
        anyhow!("{method} {url}: {e} (is `lethe serve` running there?)")
    }
}

/// Whether retrying cannot help: the URL itself is unusable.
fn is_bad_url(e: &ureq::Error) -> bool {
    matches!(
        e.kind(),
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme
    )
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .build(),
        }
    }

    /// The same client with another time limit per request.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Client {
        self.agent = ureq::AgentBuilder::new().timeout(timeout).build();
        self
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /ready`: Ok when the daemon answers 200; the error says why
    /// not, briefly.
    pub fn ready(&self) -> Result<()> {
        match self.agent.get(&format!("{}/ready", self.base)).call() {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                bail!("/ready answered {}", problem_text(code, &text))
            }
            Err(ureq::Error::Transport(t)) => {
                let why = std::error::Error::source(&t)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| t.kind().to_string());
                bail!("{why}")
            }
        }
    }

    /// `GET /v1/config`: the daemon's whole configuration.
    pub fn config(&self) -> Result<Config> {
        self.get("/v1/config")
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(String, Option<String>)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(tag) = if_match {
            req = req.set("If-Match", tag);
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => {
                let etag = resp.header("ETag").map(str::to_string);
                let mut text = String::new();
                resp.into_reader()
                    .take(64 << 20)
                    .read_to_string(&mut text)
                    .context("reading the answer")?;
                Ok((text, etag))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Err(anyhow!("{method} {path}: {}", problem_text(code, &text)))
            }
            Err(e) => Err(transport_error(method, &url, &e)),
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (text, _) = self.call("GET", path, None, None)?;
        serde_json::from_str(&text).with_context(|| format!("GET {path}: unexpected answer"))
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<String> {
        Ok(self.call(method, path, body.as_ref(), None)?.0)
    }
}

fn table(rows: Vec<Vec<String>>) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn vip_list(c: &Client, json: bool) -> Result<()> {
    let vips: Vec<Vip> = c.get("/v1/vips")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&vips)?);
        return Ok(());
    }
    let mut rows = vec![[
        "NAME", "ADDRESS", "PORT", "PROTO", "MODE", "STICKY", "TABLE", "BACKENDS",
    ]
    .map(String::from)
    .to_vec()];
    for v in vips {
        rows.push(vec![
            v.name,
            v.address.to_string(),
            v.port.to_string(),
            v.protocol.to_string(),
            v.mode.to_string(),
            v.sticky.to_string(),
            v.table_size.to_string(),
            v.backends.len().to_string(),
        ]);
    }
    table(rows);
    Ok(())
}

pub struct NewVip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    pub sticky: bool,
    pub table_size: Option<u32>,
}

pub fn vip_add(c: &Client, v: NewVip) -> Result<()> {
    let vip = Vip {
        name: v.name,
        address: v.address,
        port: v.port,
        protocol: v.protocol,
        mode: v.mode,
        sticky: v.sticky,
        table_size: v.table_size.unwrap_or(crate::maglev::DEFAULT_TABLE_SIZE),
        event_sample_rate: 0,
        health_check: HealthCheck::None,
        backends: Vec::new(),
    };
    c.send("POST", "/v1/vips", Some(serde_json::to_value(&vip)?))?;
    println!(
        "added VIP {} {}/{} ({})",
        vip.name,
        SocketAddr::new(vip.address, vip.port),
        vip.protocol,
        vip.mode
    );
    Ok(())
}

pub fn vip_del(c: &Client, name: &str) -> Result<()> {
    c.send("DELETE", &vip_path(name)?, None)?;
    println!("deleted VIP {name}");
    Ok(())
}

pub fn backend_list(c: &Client, vip: &str, json: bool) -> Result<()> {
    let path = format!("{}/backends", vip_path(vip)?);
    if json {
        let bs: Value = c.get(&path)?;
        println!("{}", serde_json::to_string_pretty(&bs)?);
        return Ok(());
    }
    let bs: Vec<BackendView> = c.get(&path)?;
    let mut rows = vec![["ADDRESS", "PORT", "WEIGHT", "HEALTH", "SLOTS"]
        .map(String::from)
        .to_vec()];
    for b in bs {
        rows.push(vec![
            b.address.to_string(),
            b.port.to_string(),
            b.weight.to_string(),
            b.health,
            b.slots.to_string(),
        ]);
    }
    table(rows);
    Ok(())
}

pub fn backend_add(
    c: &Client,
    vip: &str,
    address: IpAddr,
    weight: u32,
    port: Option<u16>,
) -> Result<()> {
    let b = Backend {
        address,
        port,
        weight,
    };
    c.send(
        "POST",
        &format!("{}/backends", vip_path(vip)?),
        Some(serde_json::to_value(&b)?),
    )?;
    println!("added backend {address} to {vip} (weight {weight})");
    Ok(())
}

pub fn backend_set(
    c: &Client,
    vip: &str,
    address: IpAddr,
    weight: Option<u32>,
    port: Option<u16>,
) -> Result<()> {
    if weight.is_none() && port.is_none() {
        bail!("nothing to set: give --weight and/or --port");
    }
    let p = BackendPatch { weight, port };
    c.send(
        "PATCH",
        &backend_path(vip, address)?,
        Some(serde_json::to_value(&p)?),
    )?;
    println!("updated backend {address} of {vip}");
    Ok(())
}

pub fn backend_del(c: &Client, vip: &str, address: IpAddr) -> Result<()> {
    c.send("DELETE", &backend_path(vip, address)?, None)?;
    println!("deleted backend {address} of {vip}");
    Ok(())
}

pub fn config_get(c: &Client) -> Result<()> {
    let (text, etag) = c.call("GET", "/v1/config", None, None)?;
    let v: Value = serde_json::from_str(&text)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if let Some(tag) = etag {
        eprintln!("etag: {tag}");
    }
    Ok(())
}

pub fn config_apply(c: &Client, path: &std::path::Path, if_match: Option<&str>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Parse locally first: a clear error for a broken file, and the server
    // still validates everything.
    let config: Config = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))?;
    let (_, etag) = c.call(
        "PUT",
        "/v1/config",
        Some(&serde_json::to_value(&config)?),
        if_match,
    )?;
    println!(
        "applied {} ({} VIPs){}",
        path.display(),
        config.vips.len(),
        etag.map(|t| format!(", etag {t}")).unwrap_or_default()
    );
    Ok(())
}

pub fn stats(c: &Client, json: bool) -> Result<()> {
    if json {
        let v: Value = c.get("/v1/stats")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = c.send("GET", "/v1/stats", None)?;
    let s: Value = serde_json::from_str(&text)?;
    println!("verdict reasons (packets):");
    let mut rows = vec![vec!["REASON".to_string(), "PACKETS".into(), "BYTES".into()]];
    if let Some(m) = s["reasons"].as_object() {
        for (name, c) in m {
            if c["packets"].as_u64().unwrap_or(0) > 0 {
                rows.push(vec![
                    name.clone(),
                    c["packets"].to_string(),
                    c["bytes"].to_string(),
                ]);
            }
        }
    }
    table(rows);
    println!();
    let mut rows = vec![vec![
        "VIP".to_string(),
        "BACKEND".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for v in s["vips"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        rows.push(vec![
            name.clone(),
            "*".into(),
            v["packets"].to_string(),
            v["bytes"].to_string(),
        ]);
        for b in v["backends"].as_array().into_iter().flatten() {
            rows.push(vec![
                String::new(),
                b["address"].as_str().unwrap_or("").to_string(),
                b["packets"].to_string(),
                b["bytes"].to_string(),
            ]);
        }
    }
    table(rows);
    Ok(())
}

pub fn trace(
    c: &Client,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: Protocol,
) -> Result<()> {
    let path = format!("/v1/trace?src={src}&sport={sport}&dst={dst}&dport={dport}&proto={proto}");
    let text = c.send("GET", &path, None)?;
    let v: Value = serde_json::from_str(&text)?;
    println!("{}", v["flow"].as_str().unwrap_or(""));
    let side = |s: &Value| {
        let mut parts = Vec::new();
        for k in ["vip", "backend", "verdict", "reason", "hash", "slot"] {
            if !s[k].is_null() {
                parts.push(format!("{k} {}", s[k].to_string().trim_matches('"')));
            }
        }
        parts.join(", ")
    };
    println!("  model:  {}", side(&v["model"]));
    println!("  kernel: {}", side(&v["kernel"]));
    let agree = v["agree"].as_bool().unwrap_or(false);
    println!("  {}", if agree { "agree" } else { "DISAGREE" });
    if !agree {
        bail!("the kernel and the model disagree");
    }
    Ok(())
}

/// Filters of `lethe tail` (the query of GET /v1/events).
#[derive(Debug, Clone, Default)]
pub struct TailFilter {
    pub vip: Option<String>,
    pub backend: Option<IpAddr>,
    pub verdict: Option<String>,
    pub kind: Option<String>,
}

impl TailFilter {
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(v) = &self.vip {
            q.push(format!("vip={}", encode(v)));
        }
        if let Some(b) = &self.backend {
            q.push(format!("backend={}", encode(&b.to_string())));
        }
        if let Some(v) = &self.verdict {
            q.push(format!("verdict={}", encode(v)));
        }
        if let Some(k) = &self.kind {
            q.push(format!("kind={}", encode(k)));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// One event as a line a person reads.
pub fn format_event(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    };
    match v["kind"].as_str().unwrap_or("") {
        "decision" => {
            let dst = |a: &str, p: &str| match (a.parse::<IpAddr>(), p.parse::<u16>()) {
                (Ok(a), Ok(p)) => SocketAddr::new(a, p).to_string(),
                _ => format!("{a}:{p}"),
            };
            format!(
                "{} {} {} → {} ({}) ⇒ {} {} {} {}",
                s("time"),
                s("proto"),
                dst(&s("src"), &s("sport")),
                s("vip"),
                dst(&s("dst"), &s("dport")),
                s("backend"),
                s("mode"),
                if v["iface"].is_null() {
                    format!("if{}", s("ifindex"))
                } else {
                    s("iface")
                },
                s("reason"),
            )
        }
        "health" => {
            let err = if v["error"].is_null() {
                String::new()
            } else {
                format!(" ({})", s("error"))
            };
            format!(
                "{} health {} {} {}{}",
                s("time"),
                s("vip"),
                s("backend"),
                s("state"),
                err
            )
        }
        "fail_open" => format!(
            "{} fail-open {} {}",
            s("time"),
            s("vip"),
            if v["failed_open"] == Value::Bool(true) {
                "on: every backend is down, all stay in the table"
            } else {
                "off"
            }
        ),
        "config" => format!("{} config {} (etag {})", s("time"), s("change"), s("etag")),
        "lost" => format!(
            "{} lost {} events: this reader fell behind",
            s("time"),
            s("count")
        ),
        other => format!("{} {other}: {v}", s("time")),
    }
}

/// Follows the event stream, printing each event; reconnects whenever the
/// daemon goes away, until interrupted. `max` stops after that many events.
/// A URL that cannot work, or a request the daemon refuses (4xx), ends it
/// with an error instead.
pub fn tail(base: &str, filter: &TailFilter, json: bool, max: Option<NonZeroU64>) -> Result<()> {
    use std::io::BufRead;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(3))
        // The daemon sends a keep-alive comment every 15 s.
        .timeout_read(std::time::Duration::from_secs(45))
        .build();
    let url = format!("{}/v1/events{}", base.trim_end_matches('/'), filter.query());
    let mut printed = 0u64;
    let mut backoff = std::time::Duration::from_millis(200);
    let mut connected_once = false;
    let mut said_waiting = false;
    loop {
        match agent.get(&url).set("Accept", "text/event-stream").call() {
            Ok(resp) => {
                if connected_once {
                    // The daemon keeps no backlog: a new stream starts now.
                    eprintln!(
                        "reconnected to {base}: events published while disconnected are not shown"
                    );
                }
                connected_once = true;
                backoff = std::time::Duration::from_millis(200);
                let reader = std::io::BufReader::new(resp.into_reader());
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim_start();
                    if json {
                        println!("{data}");
                    } else if let Ok(v) = serde_json::from_str::<Value>(data) {
                        println!("{}", format_event(&v));
                    }
                    printed += 1;
                    if max.is_some_and(|m| printed >= m.get()) {
                        return Ok(());
                    }
                }
                eprintln!("the event stream ended; reconnecting");
            }
            Err(ureq::Error::Status(code, resp)) if (400..500).contains(&code) => {
                let text = resp.into_string().unwrap_or_default();
                bail!("GET /v1/events: {}", problem_text(code, &text));
            }
            Err(e) if is_bad_url(&e) => return Err(transport_error("GET", &url, &e)),
            Err(e) => {
                if !connected_once && !said_waiting {
                    eprintln!("waiting for {base}: {e}");
                    said_waiting = true;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(std::time::Duration::from_secs(3));
    }
}
