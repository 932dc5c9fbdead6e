//! The client commands of the `lethe` binary against a fake API: a plain
//! TCP listener that records each request line and answers a canned
//! response. No daemon, no root: what is checked is what the client sends
//! and prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe::config::Config;
use lethe::dataplane::Traced;
use lethe::flow_hash::FlowKey;
use lethe::plan::Plan;

/// A listener on 127.0.0.1:0 answering one connection per canned answer,
/// in order; then it stops listening.
struct FakeApi {
    url: String,
    requests: mpsc::Receiver<String>,
}

impl FakeApi {
    fn start(answers: Vec<String>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                // The rest of the head, and the body, so closing sends no RST.
                let mut length = 0;
                let mut chunked = false;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                if chunked {
                    let mut body = Vec::new();
                    while !body.ends_with(b"0\r\n\r\n") {
                        let mut byte = [0u8];
                        if reader.read(&mut byte).unwrap() == 0 {
                            break;
                        }
                        body.push(byte[0]);
                    }
                } else {
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                }
                let _ = tx.send(request_line.trim_end().to_string());
                let mut stream = reader.into_inner();
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        FakeApi { url, requests }
    }

    /// The request line of the next request (waits a little for it).
    fn request(&self) -> String {
        self.requests
            .recv_timeout(Duration::from_secs(10))
            .expect("a request")
    }
}

fn answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn not_found() -> String {
    answer(
        "404 Not Found",
        "application/problem+json",
        r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no such VIP"}"#,
    )
}

const EVENT: &str =
    r#"{"kind":"config","time":"2024-01-01T00:00:00Z","change":"put","etag":"\"1\""}"#;

/// An event stream of one event, then the end of the connection.
fn one_event() -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: {EVENT}\n\n"
    )
}

/// Runs `lethe ARGS`; fails the test if it has not exited within 20 s.
fn lethe(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env_remove("LETHE_API")
        .env_remove("LETHE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "lethe {args:?} did not exit within 20 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn vip_del_encodes_the_name_so_it_names_one_vip() {
    for (name, path) in [
        ("web?", "/v1/vips/web%3F"),
        (
            "web/backends/10.0.0.1",
            "/v1/vips/web%2Fbackends%2F10.0.0.1",
        ),
        ("web#x", "/v1/vips/web%23x"),
        ("we b%", "/v1/vips/we%20b%25"),
        ("wéb", "/v1/vips/w%C3%A9b"),
    ] {
        let api = FakeApi::start(vec![not_found()]);
        let out = lethe(&["vip", "del", name, "--api", &api.url]);
        assert_eq!(api.request(), format!("DELETE {path} HTTP/1.1"), "{name:?}");
        assert_eq!(out.status.code(), Some(1), "{name:?}");
        assert!(stderr(&out).contains("404"), "{name:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains("deleted"), "{name:?}");
    }
}

#[test]
fn backend_commands_encode_the_vip() {
    for (args, line) in [
        (
            &["backend", "del", "web?", "10.0.0.1"][..],
            "DELETE /v1/vips/web%3F/backends/10.0.0.1 HTTP/1.1",
        ),
        (
            &["backend", "set", "a/b", "2001:db8::1", "--weight", "0"],
            "PATCH /v1/vips/a%2Fb/backends/2001:db8::1 HTTP/1.1",
        ),
        (
            &["backend", "add", "web?x=1", "10.0.0.1"],
            "POST /v1/vips/web%3Fx%3D1/backends HTTP/1.1",
        ),
        (
            &["backend", "list", "web#"],
            "GET /v1/vips/web%23/backends HTTP/1.1",
        ),
    ] {
        let api = FakeApi::start(vec![not_found()]);
        let mut all = args.to_vec();
        all.extend(["--api", &api.url]);
        let out = lethe(&all);
        assert_eq!(api.request(), line, "{args:?}");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}

#[test]
fn dot_names_are_refused_before_any_request() {
    // URL parsing would drop them (even as %2E): DELETE /v1/vips/.. is
    // DELETE /v1/.
    for args in [
        &["vip", "del", ".."][..],
        &["vip", "del", "."],
        &["backend", "del", "..", "10.0.0.1"],
        &["backend", "list", ""],
    ] {
        let api = FakeApi::start(vec![not_found()]);
        let mut all = args.to_vec();
        all.extend(["--api", &api.url]);
        let out = lethe(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("no VIP is named"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(api.requests.try_recv().is_err(), "{args:?} sent a request");
    }
}

#[test]
fn tail_encodes_its_filters() {
    let api = FakeApi::start(vec![one_event()]);
    let out = lethe(&[
        "tail",
        "--vip",
        "web&kind=health",
        "--backend",
        "2001:db8::1",
        "--count",
        "1",
        "--json",
        "--api",
        &api.url,
    ]);
    assert_eq!(
        api.request(),
        "GET /v1/events?vip=web%26kind%3Dhealth&backend=2001:db8::1 HTTP/1.1"
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{EVENT}\n"));
}

#[test]
fn tail_exits_on_a_url_it_cannot_use() {
    // Without http:// the first is no URL and the second has the scheme
    // "localhost": retrying cannot help either.
    for api in ["127.0.0.1:1", "localhost:1", "ftp://127.0.0.1:1"] {
        let out = lethe(&["tail", "--api", api]);
        assert_eq!(out.status.code(), Some(1), "{api}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("http://127.0.0.1:9180"),
            "{api}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn tail_after_a_failed_first_attempt_does_not_say_reconnected() {
    let unavailable = answer(
        "503 Service Unavailable",
        "application/problem+json",
        r#"{"title":"Service Unavailable","status":503,"detail":"starting"}"#,
    );
    let api = FakeApi::start(vec![unavailable, one_event()]);
    let out = lethe(&["tail", "--count", "1", "--json", "--api", &api.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{EVENT}\n"));
    let err = stderr(&out);
    assert!(err.contains(&format!("waiting for {}", api.url)), "{err}");
    assert!(!err.contains("reconnected"), "{err}");
}

#[test]
fn tail_says_what_a_reconnect_missed() {
    let api = FakeApi::start(vec![one_event(), one_event()]);
    let out = lethe(&["tail", "--count", "2", "--json", "--api", &api.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{EVENT}\n{EVENT}\n"));
    let err = stderr(&out);
    assert!(
        err.contains("the event stream ended; reconnecting"),
        "{err}"
    );
    let said = format!(
        "reconnected to {}: events published while disconnected are not shown",
        api.url
    );
    assert_eq!(err.matches(&said).count(), 1, "{err}");
}

#[test]
fn tail_refuses_count_zero() {
    let api = FakeApi::start(vec![one_event()]);
    let out = lethe(&["tail", "--count", "0", "--json", "--api", &api.url]);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("--count"), "{}", stderr(&out));
}

#[test]
fn vip_add_prints_ipv6_with_brackets() {
    let api = FakeApi::start(vec![answer("201 Created", "application/json", "{}")]);
    let out = lethe(&[
        "vip",
        "add",
        "web",
        "--address",
        "2001:db8::1",
        "--port",
        "80",
        "--api",
        &api.url,
    ]);
    assert_eq!(api.request(), "POST /v1/vips HTTP/1.1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added VIP web [2001:db8::1]:80/tcp (dsr)\n");
}

const V6_CONFIG: &str = r#"{"vips": [{"name": "web", "address": "2001:db8::100",
    "port": 80, "protocol": "tcp", "table_size": 7,
    "backends": [{"address": "2001:db8:1::1"}]}]}"#;

#[test]
fn offline_plan_and_trace_print_ipv6_with_brackets() {
    let dir = std::env::temp_dir().join(format!("lethe-cli-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("v6.json");
    std::fs::write(&file, V6_CONFIG).unwrap();
    let file = file.to_str().unwrap();

    let plan = lethe(&["plan", file]);
    let trace = lethe(&[
        "trace",
        "--config",
        file,
        "--src",
        "2001:db8::7",
        "--sport",
        "40000",
        "--dst",
        "2001:db8::100",
        "--dport",
        "80",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("\nweb [2001:db8::100]:80/tcp mode dsr table 7 slots\n"),
        "{}",
        stdout(&plan)
    );
    assert!(trace.status.success(), "{}", stderr(&trace));
    assert!(
        stdout(&trace).starts_with(
            "tcp [2001:db8::7]:40000 -> [2001:db8::100]:80 matches VIP web ([2001:db8::100]:80/tcp, mode dsr)\n"
        ),
        "{}",
        stdout(&trace)
    );
}

#[test]
fn trace_view_flow_prints_ipv6_with_brackets() {
    let config: Config = serde_json::from_str(V6_CONFIG).unwrap();
    let plan = Arc::new(Plan::new(&config).unwrap());
    for (src, dst, want) in [
        (
            "2001:db8::7",
            "2001:db8::100",
            "tcp [2001:db8::7]:40000 -> [2001:db8::100]:80",
        ),
        (
            "192.0.2.7",
            "10.100.0.1",
            "tcp 192.0.2.7:40000 -> 10.100.0.1:80",
        ),
    ] {
        let flow = FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        let report = lethe::control::TraceReport {
            flow,
            plan: plan.clone(),
            model: lethe::model::pick(&plan, &flow),
            kernel: Traced {
                action: None,
                reason: None,
                vip: None,
                backend: None,
                hash: None,
                frame: Vec::new(),
            },
        };
        assert_eq!(lethe::api::trace_view(&report).flow, want);
    }
}

#[test]
fn format_event_brackets_ipv6() {
    let event = serde_json::json!({
        "kind": "decision", "time": "t", "proto": "tcp",
        "src": "2001:db8::7", "sport": 40000, "vip": "web",
        "dst": "2001:db8::100", "dport": 80, "backend": "2001:db8:1::1",
        "mode": "dsr", "iface": "eth0", "reason": "fwd_tx",
    });
    assert_eq!(
        lethe::cli::format_event(&event),
        "t tcp [2001:db8::7]:40000 → web ([2001:db8::100]:80) ⇒ 2001:db8:1::1 dsr eth0 fwd_tx"
    );
    let event = serde_json::json!({
        "kind": "decision", "time": "t", "proto": "udp",
        "src": "192.0.2.7", "sport": 5353, "vip": "dns",
        "dst": "10.100.0.2", "dport": 53, "backend": "10.0.1.1",
        "mode": "nat", "ifindex": 3, "reason": "fwd_tx",
    });
    assert_eq!(
        lethe::cli::format_event(&event),
        "t udp 192.0.2.7:5353 → dns (10.100.0.2:53) ⇒ 10.0.1.1 nat if3 fwd_tx"
    );
}
