//! The REST API through `router(state)` with tower's oneshot, on a real
//! loaded data plane (no interface attached): every route's happy path,
//! and for every kind of bad input a problem+json 4xx and nothing changed
//! (same ETag, same saved file, same maps).
//!
//! Privileged: the controller writes real BPF maps. Run by scripts/test.sh.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use lethe::api::{router, ApiState, BODY_LIMIT};
use lethe::config::Config;
use lethe::control::Controller;
use lethe::dataplane::Dataplane;
use lethe::store::Store;

struct App {
    router: Router,
    control: Arc<Controller>,
    state_dir: PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

async fn app(token: Option<&str>) -> App {
    app_on(Dataplane::load().expect("load XDP program"), token).await
}

async fn app_on(dp: Dataplane, token: Option<&str>) -> App {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let state_dir = std::env::temp_dir().join(format!("lethe-api-test-{}-{n}", std::process::id()));
    let dp = Arc::new(dp);
    let control = Arc::new(
        Controller::start(dp, Some(Store::new(&state_dir)), Config::default())
            .await
            .unwrap(),
    );
    let router = router(ApiState {
        control: control.clone(),
        token: token.map(Arc::from),
        shutdown: tokio_util::sync::CancellationToken::new(),
    });
    App {
        router,
        control,
        state_dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl App {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn raw(&self, method: Method, uri: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn etag(&self) -> String {
        self.control.snapshot().await.etag
    }

    fn saved(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join("config.json")).ok()
    }
}

fn web() -> Value {
    json!({"name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp",
           "backends": [{"address": "10.0.1.1"}, {"address": "10.0.1.2", "weight": 2}]})
}

fn assert_problem(r: &Resp, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(r.body["status"], status.as_u16(), "{what}");
    assert!(
        r.body["type"].as_str().unwrap().starts_with("urn:lethe:"),
        "{what}"
    );
    assert!(!r.body["detail"].as_str().unwrap().is_empty(), "{what}");
}

#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn routes_work_end_to_end() {
    let app = app(None).await;

    // PUT the whole config; GET it back with the same ETag; PUT again is a no-op.
    let config = json!({"hash_seed": 7, "vips": [web()]});
    let r = app
        .call(Method::PUT, "/v1/config", Some(config.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
    let r = app.call(Method::GET, "/v1/config", None, &[]).await;
    assert_eq!(r.headers[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(
        r.body["vips"][0]["table_size"], 65537,
        "defaults are filled in"
    );
    let applied = app
        .control
        .stats
        .changes_applied
        .load(std::sync::atomic::Ordering::Relaxed);
    let r = app
        .call(
            Method::PUT,
            "/v1/config",
            Some(config.clone()),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::ETAG].to_str().unwrap(),
        etag,
        "idempotent PUT changed the ETag"
    );
    assert_eq!(
        app.control
            .stats
            .changes_applied
            .load(std::sync::atomic::Ordering::Relaxed),
        applied + 1
    );
    let saved: Config = serde_json::from_str(&app.saved().unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&saved).unwrap(), r.body);

    // VIPs.
    let dns = json!({"name": "dns", "address": "10.100.0.2", "port": 53, "protocol": "udp", "mode": "ipip"});
    let r = app.call(Method::POST, "/v1/vips", Some(dns), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers[header::LOCATION], "/v1/vips/dns");
    let r = app.call(Method::GET, "/v1/vips", None, &[]).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = app
        .call(
            Method::PATCH,
            "/v1/vips/dns",
            Some(json!({"sticky": true, "table_size": 7919})),
            &[],
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["sticky"].clone(),
            r.body["table_size"].clone()
        ),
        (StatusCode::OK, json!(true), json!(7919))
    );
    let r = app.call(Method::GET, "/v1/vips/dns", None, &[]).await;
    assert_eq!(r.body["mode"], "ipip");

    // Backends.
    let r = app
        .call(
            Method::POST,
            "/v1/vips/dns/backends",
            Some(json!({"address": "fd00::1"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers[header::LOCATION], "/v1/vips/dns/backends/fd00::1");
    assert_eq!(
        (r.body["port"].clone(), r.body["slots"].clone()),
        (json!(53), json!(7919))
    );
    let r = app
        .call(
            Method::POST,
            "/v1/vips/dns/backends",
            Some(json!({"address": "10.0.2.2", "weight": 3})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .call(
            Method::PATCH,
            "/v1/vips/dns/backends/fd00::1",
            Some(json!({"weight": 0})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["weight"].clone(), r.body["slots"].clone()),
        (StatusCode::OK, json!(0), json!(0))
    );
    let r = app
        .call(Method::GET, "/v1/vips/dns/backends", None, &[])
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert_eq!(
        r.body[1]["slots"], 7919,
        "the other backend holds every slot"
    );
    let r = app
        .call(Method::GET, "/v1/vips/dns/backends/10.0.2.2", None, &[])
        .await;
    assert_eq!(r.body["weight"], 3);
    let r = app
        .call(Method::DELETE, "/v1/vips/dns/backends/fd00::1", None, &[])
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // The table: shares, and the kernel's table hashes like the plan's.
    let r = app.call(Method::GET, "/v1/vips/web/table", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["size"], 65537);
    assert_eq!(r.body["digest"], r.body["published_digest"]);
    assert_eq!(r.body["digest"].as_str().unwrap().len(), 64);
    let slots: u64 = r.body["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["slots"].as_u64().unwrap())
        .sum();
    assert_eq!(slots, 65537);
    assert!((r.body["backends"][1]["share"].as_f64().unwrap() - 2.0 / 3.0).abs() < 0.001);

    // Trace: the model and the kernel pick the same backend.
    let r = app
        .call(
            Method::GET,
            "/v1/trace?src=192.0.2.9&sport=5555&dst=10.100.0.1&dport=80",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["agree"], true, "{}", r.text);
    assert_eq!(r.body["model"]["vip"], "web");
    assert_eq!(r.body["kernel"]["vip"], "web");
    assert_eq!(r.body["model"]["backend"], r.body["kernel"]["backend"]);
    let r = app
        .call(
            Method::GET,
            "/v1/trace?src=192.0.2.9&sport=1&dst=10.100.0.1&dport=81&proto=udp",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (r.body["agree"].clone(), r.body["kernel"]["reason"].clone()),
        (json!(true), json!("not_vip"))
    );

    // Stats and metrics see the traced packets.
    let r = app.call(Method::GET, "/v1/stats", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["vips"][0]["name"], "web");
    assert_eq!(r.body["vips"][0]["packets"], 1);
    assert_eq!(r.body["reasons"]["not_vip"]["packets"], 1);
    let r = app.call(Method::GET, "/metrics", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("lethe_vip_packets_total{vip=\"web\"} 1"),
        "{}",
        r.text
    );
    assert!(r
        .text
        .contains("lethe_packets_total{verdict=\"pass\",reason=\"not_vip\"} 1"));
    assert!(r
        .text
        .contains("# TYPE lethe_backend_packets_total counter"));
    assert!(r
        .text
        .contains("lethe_config_changes_total{result=\"applied\"}"));

    // Liveness and readiness.
    assert_eq!(
        app.call(Method::GET, "/live", None, &[]).await.status,
        StatusCode::OK
    );
    assert_problem(
        &app.call(Method::GET, "/ready", None, &[]).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready",
    );
    app.control.set_ready(true);
    assert_eq!(
        app.call(Method::GET, "/ready", None, &[]).await.status,
        StatusCode::OK
    );

    // Delete.
    let r = app.call(Method::DELETE, "/v1/vips/dns", None, &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_problem(
        &app.call(Method::GET, "/v1/vips/dns", None, &[]).await,
        StatusCode::NOT_FOUND,
        "deleted VIP",
    );
}

/// Each bad request: its status, a problem body, and nothing changed.
#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = app(None).await;
    let r = app
        .call(
            Method::PUT,
            "/v1/config",
            Some(json!({"vips": [web()]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let before_etag = app.etag().await;
    let before_file = app.saved();
    let before_table = app
        .call(Method::GET, "/v1/vips/web/table", None, &[])
        .await
        .body;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = web();
        f(&mut v);
        json!({"vips": [v]})
    };
    let mut cases: Vec<(&str, Method, String, Option<Value>, StatusCode)> = vec![
        (
            "unknown field",
            Method::PUT,
            "/v1/config".into(),
            Some(json!({"vips": [], "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "wrong type",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["port"] = json!("80"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing field",
            Method::POST,
            "/v1/vips".into(),
            Some(json!({"name": "x", "address": "10.0.0.1", "port": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid address",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["address"] = json!("10.0.0.256"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unusable address",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["address"] = json!("0.0.0.0"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "loopback backend",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["backends"][0]["address"] = json!("127.0.0.1"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "IPv4-mapped IPv6 VIP",
            Method::PUT,
            "/v1/config".into(),
            Some(
                json!({"vips": [{"name": "m", "address": "::ffff:10.100.0.9", "port": 80,
                                  "protocol": "tcp", "backends": [{"address": "fd00::1"}]}]}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a backend whose weight rounds to no slot",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| {
                v["table_size"] = json!(7);
                v["backends"] = json!([{"address": "10.0.1.1", "weight": 100},
                                       {"address": "10.0.1.2", "weight": 100},
                                       {"address": "10.0.1.3", "weight": 1}]);
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a backend added whose weight leaves another no slot (POST)",
            Method::POST,
            "/v1/vips/web/backends".into(),
            Some(json!({"address": "10.0.1.3", "weight": 65535})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a health check of kind none with other fields",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| {
                v["health_check"] = json!({"kind": "none", "port": 80})
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "mixed-family dsr backend",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["backends"][0]["address"] = json!("fd00::1"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "port out of range",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["port"] = json!(65536))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative port",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["port"] = json!(-1))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown mode",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["mode"] = json!("tunnel"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "gue carrying IPv6 in IPv4",
            Method::PUT,
            "/v1/config".into(),
            Some(
                json!({"vips": [{"name": "g", "address": "fd00::100", "port": 80, "protocol": "tcp",
                                  "mode": "gue", "backends": [{"address": "10.0.0.1"}]}]}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "gue port 0",
            Method::PUT,
            "/v1/config".into(),
            Some(json!({"gue_port": 0, "vips": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown protocol",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["protocol"] = json!("sctp"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "table size not prime",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["table_size"] = json!(65536))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "table size out of bounds",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["table_size"] = json!(2_000_003))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "weight out of range",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["backends"][0]["weight"] = json!(65536))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "duplicate backend",
            Method::PUT,
            "/v1/config".into(),
            Some(with(&|v| v["backends"][1]["address"] = json!("10.0.1.1"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "duplicate VIP key",
            Method::PUT,
            "/v1/config".into(),
            Some(
                json!({"vips": [web(), {"name": "web2", "address": "10.100.0.1", "port": 80, "protocol": "tcp"}]}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "duplicate VIP name (POST)",
            Method::POST,
            "/v1/vips".into(),
            Some(web()),
            StatusCode::CONFLICT,
        ),
        (
            "a nat backend already serving another nat VIP",
            Method::PUT,
            "/v1/config".into(),
            Some(json!({"vips": [
                {"name": "a", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "nat",
                 "backends": [{"address": "10.0.1.1"}]},
                {"name": "b", "address": "10.100.0.2", "port": 80, "protocol": "tcp", "mode": "nat",
                 "backends": [{"address": "10.0.1.1"}]}]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a new VIP with an existing VIP's address, port and protocol (POST)",
            Method::POST,
            "/v1/vips".into(),
            Some(json!({"name": "web2", "address": "10.100.0.1", "port": 80, "protocol": "tcp"})),
            StatusCode::CONFLICT,
        ),
        (
            "a nat backend of another family",
            Method::PUT,
            "/v1/config".into(),
            Some(json!({"vips": [
                {"name": "a", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "nat",
                 "backends": [{"address": "fd00::1"}]}]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "duplicate backend (POST)",
            Method::POST,
            "/v1/vips/web/backends".into(),
            Some(json!({"address": "10.0.1.1"})),
            StatusCode::CONFLICT,
        ),
        (
            "VIP that does not exist (PATCH)",
            Method::PATCH,
            "/v1/vips/nope".into(),
            Some(json!({"sticky": true})),
            StatusCode::NOT_FOUND,
        ),
        (
            "VIP that does not exist (DELETE)",
            Method::DELETE,
            "/v1/vips/nope".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "VIP that does not exist (table)",
            Method::GET,
            "/v1/vips/nope/table".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "backend that does not exist",
            Method::DELETE,
            "/v1/vips/web/backends/10.9.9.9".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "backend of a VIP that does not exist",
            Method::POST,
            "/v1/vips/nope/backends".into(),
            Some(json!({"address": "10.0.1.1"})),
            StatusCode::NOT_FOUND,
        ),
        (
            "address in the path is not one",
            Method::PATCH,
            "/v1/vips/web/backends/not-an-ip".into(),
            Some(json!({"weight": 2})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "VIP name in the path not UTF-8",
            Method::GET,
            "/v1/vips/%FF".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "VIP name in the path not UTF-8 (PATCH)",
            Method::PATCH,
            "/v1/vips/%FF%FE".into(),
            Some(json!({"sticky": true})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "backend address in the path not UTF-8",
            Method::DELETE,
            "/v1/vips/web/backends/%C0".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "name in a VIP patch",
            Method::PATCH,
            "/v1/vips/web".into(),
            Some(json!({"name": "other"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid patch value",
            Method::PATCH,
            "/v1/vips/web".into(),
            Some(json!({"table_size": 10})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "trace without ports",
            Method::GET,
            "/v1/trace?src=192.0.2.1&dst=10.100.0.1".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "trace with mixed families",
            Method::GET,
            "/v1/trace?src=2001:db8::1&sport=1&dst=10.100.0.1&dport=80".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            Method::GET,
            "/v2/config".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "method not allowed",
            Method::DELETE,
            "/v1/config".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    // More VIPs and more backends than the maps hold.
    let many_vips: Vec<Value> = (0..=lethe::abi::MAX_VIPS)
        .map(|i| json!({"name": format!("v{i}"), "address": "10.100.0.1", "port": i, "protocol": "tcp"}))
        .collect();
    cases.push((
        "more VIPs than the maps hold",
        Method::PUT,
        "/v1/config".into(),
        Some(json!({"vips": many_vips})),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    let many_backends: Vec<Value> = (0..=lethe::config::MAX_TOTAL_BACKENDS as u32)
        .map(|i| json!({"address": std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string()}))
        .collect();
    cases.push((
        "more backends than the maps hold",
        Method::PUT,
        "/v1/config".into(),
        Some(with(&|v| v["backends"] = json!(many_backends.clone()))),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));

    for (what, method, uri, body, status) in cases {
        let r = app.call(method, &uri, body, &[]).await;
        assert_problem(&r, status, what);
        assert_eq!(
            app.etag().await,
            before_etag,
            "{what} changed the configuration"
        );
        assert_eq!(app.saved(), before_file, "{what} changed the saved file");
    }

    // Bodies that are not JSON at all.
    let r = app
        .raw(
            Method::PUT,
            "/v1/config",
            "application/json",
            b"{\"vips\": [".to_vec(),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed JSON");
    let r = app
        .raw(Method::PUT, "/v1/config", "text/plain", b"{}".to_vec())
        .await;
    assert_problem(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "not JSON");
    let mut huge = b"{\"vips\": [], \"pad\": \"".to_vec();
    huge.resize(BODY_LIMIT + 1024, b'x');
    huge.extend_from_slice(b"\"}");
    let r = app
        .raw(Method::PUT, "/v1/config", "application/json", huge)
        .await;
    assert_problem(&r, StatusCode::PAYLOAD_TOO_LARGE, "oversized body");

    // A stale ETag.
    let r = app
        .call(
            Method::PUT,
            "/v1/config",
            Some(json!({"vips": []})),
            &[("If-Match", "\"0000000000000000\"")],
        )
        .await;
    assert_problem(&r, StatusCode::PRECONDITION_FAILED, "stale If-Match");
    // One that is not text matches nothing either (it was once ignored,
    // and the change applied).
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/v1/config")
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::IF_MATCH,
            axum::http::HeaderValue::from_bytes(b"\"\xff\"").unwrap(),
        )
        .body(Body::from(json!({"vips": []}).to_string()))
        .unwrap();
    let r = app.send(req).await;
    assert_problem(&r, StatusCode::PRECONDITION_FAILED, "If-Match not text");

    assert_eq!(app.etag().await, before_etag);
    assert_eq!(app.saved(), before_file);
    let after_table = app
        .call(Method::GET, "/v1/vips/web/table", None, &[])
        .await
        .body;
    assert_eq!(after_table, before_table, "the maps changed");
}

#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn mutations_need_the_token_reads_do_not() {
    let app = app(Some("s3cret")).await;
    let before = app.etag().await;
    let r = app.call(Method::POST, "/v1/vips", Some(web()), &[]).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "no token");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    let r = app
        .call(
            Method::POST,
            "/v1/vips",
            Some(web()),
            &[("Authorization", "Bearer wrong")],
        )
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "wrong token");
    let r = app
        .call(
            Method::DELETE,
            "/v1/vips/web",
            None,
            &[("Authorization", "Basic czNjcmV0")],
        )
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "not a bearer token");
    assert_eq!(app.etag().await, before);
    assert_eq!(
        app.call(Method::GET, "/v1/config", None, &[]).await.status,
        StatusCode::OK
    );
    let r = app
        .call(
            Method::POST,
            "/v1/vips",
            Some(web()),
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// A change whose client hangs up half-way still runs to the end: the
/// maps, the snapshot (GET, ETag) and the saved file agree on it. Dropped
/// with its request, it used to leave the maps holding a change the
/// controller never recorded.
#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn a_change_whose_client_hangs_up_still_completes() {
    let app = app(None).await;
    let before = app.etag().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/vips")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(web().to_string()))
        .unwrap();
    {
        let call = app.router.clone().oneshot(req);
        tokio::pin!(call);
        // One poll (the change starts, off this task), then the caller
        // goes away.
        tokio::select! {
            biased;
            _ = &mut call => panic!("the change finished within one poll"),
            _ = std::future::ready(()) => {}
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.etag().await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was dropped with its client: the controller never recorded it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let snap = app.control.snapshot().await;
    assert_eq!(snap.config.vips.len(), 1);
    let key = snap.plan.vips[0].key();
    let published = app.control.dataplane().published_table(&key).unwrap();
    assert!(published.is_some(), "the VIP is not in the maps");
    let saved: Config = serde_json::from_str(&app.saved().expect("saved")).unwrap();
    assert_eq!(saved, snap.config);
}

/// If-Match takes a list of ETags (RFC 9110 13.1.1): a change goes
/// through when any strong one is current (one that was not first was
/// refused, 412); weak tags, malformed lists and values that are not text
/// match nothing.
#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn if_match_takes_a_list_of_etags() {
    let app = app(None).await;
    let r = app.call(Method::POST, "/v1/vips", Some(web()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Each a real change: sticky flips.
    let patch = |if_match: Vec<u8>| {
        let app = &app;
        async move {
            let sticky = app.control.snapshot().await.config.vips[0].sticky;
            let req = Request::builder()
                .method(Method::PATCH)
                .uri("/v1/vips/web")
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::IF_MATCH,
                    axum::http::HeaderValue::from_bytes(&if_match).unwrap(),
                )
                .body(Body::from(json!({ "sticky": !sticky }).to_string()))
                .unwrap();
            app.send(req).await
        }
    };
    let other = "\"0000000000000000\"";
    let allowed: [&dyn Fn(&str) -> String; 5] = [
        &|c| c.to_string(),
        &|_| "*".to_string(),
        &|c| format!("{other}, {c}"),
        &|c| format!("{c},{other}"),
        &|c| format!(" W/{other} ,, {c} "),
    ];
    for value in allowed {
        let before = app.etag().await;
        let h = value(&before);
        let r = patch(h.clone().into_bytes()).await;
        assert_eq!(r.status, StatusCode::OK, "If-Match: {h}: {}", r.text);
        assert_ne!(app.etag().await, before, "If-Match: {h}");
    }
    let refused: [&dyn Fn(&str) -> String; 7] = [
        &|_| format!("{other}, \"1111111111111111\""),
        &|c| format!("W/{c}"),
        &|c| format!("{other}, W/{c}"),
        &|c| format!("{c} junk"),
        &|c| format!("{c}, *"),
        &|c| c[..c.len() - 1].to_string(),
        &|_| String::new(),
    ];
    for value in refused {
        let before = app.etag().await;
        let h = value(&before);
        let r = patch(h.clone().into_bytes()).await;
        assert_problem(
            &r,
            StatusCode::PRECONDITION_FAILED,
            &format!("If-Match: {h}"),
        );
        assert_eq!(app.etag().await, before, "If-Match: {h}");
    }
    // A list with bytes that are not text, though it names the current
    // ETag: not read, so not met.
    let current = app.etag().await;
    let mut value = b"\"\xff\", ".to_vec();
    value.extend_from_slice(current.as_bytes());
    let r = patch(value).await;
    assert_problem(&r, StatusCode::PRECONDITION_FAILED, "If-Match not text");
    assert_eq!(app.etag().await, current);
}

/// A change whose configuration cannot be saved is refused (500) and
/// changes nothing: the maps go back as they were, the ETag stays.
#[tokio::test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
async fn a_change_that_cannot_be_saved_changes_nothing() {
    let app = app(None).await;
    let r = app.call(Method::POST, "/v1/vips", Some(web()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let before = app.control.snapshot().await;
    let key = before.plan.vips[0].key();
    let table = app.control.dataplane().published_table(&key).unwrap();
    let saved = app.saved().expect("saved");
    // The state directory becomes a file: nothing can be saved in it.
    std::fs::remove_dir_all(&app.state_dir).unwrap();
    std::fs::write(&app.state_dir, b"not a directory").unwrap();

    let other = json!({"name": "api", "address": "10.100.0.2", "port": 443, "protocol": "tcp",
                       "backends": [{"address": "10.0.1.3"}]});
    let r = app.call(Method::POST, "/v1/vips", Some(other), &[]).await;
    assert_problem(&r, StatusCode::INTERNAL_SERVER_ERROR, "save failed");
    let r = app
        .call(
            Method::POST,
            "/v1/vips/web/backends",
            Some(json!({"address": "10.0.1.9"})),
            &[],
        )
        .await;
    assert_problem(&r, StatusCode::INTERNAL_SERVER_ERROR, "save failed");
    let after = app.control.snapshot().await;
    assert_eq!(after.etag, before.etag);
    assert_eq!(after.config, before.config);
    assert_eq!(
        app.control.dataplane().published_table(&key).unwrap(),
        table,
        "the table was not restored"
    );
    let api_key = lethe::plan::VipKey {
        address: "10.100.0.2".parse().unwrap(),
        port: 443,
        protocol: lethe::config::Protocol::Tcp,
    };
    assert_eq!(
        app.control.dataplane().published_table(&api_key).unwrap(),
        None,
        "the refused VIP is in the maps"
    );
    assert!(
        app.control
            .stats
            .changes_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );

    std::fs::remove_file(&app.state_dir).unwrap();
    std::fs::create_dir_all(&app.state_dir).unwrap();
    std::fs::write(app.state_dir.join("config.json"), &saved).unwrap();
}

/// A change the data plane refuses (the kernel: the outer table maps are
/// frozen, so no new table can be published) is a 500 that says what the
/// maps hold: here the previous state, put back; the change is neither
/// recorded nor saved.
#[tokio::test]
#[ignore = "privileged: needs root (BPF, bpffs); run by scripts/test.sh"]
async fn a_change_the_data_plane_refuses_says_what_the_maps_hold() {
    let pins = common::pins::PinDir::new("apirefused");
    let app = app_on(Dataplane::load_pinned(&pins.0).unwrap(), None).await;
    let r = app.call(Method::POST, "/v1/vips", Some(web()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let before = app.control.snapshot().await;
    let key = before.plan.vips[0].key();
    let table = app.control.dataplane().published_table(&key).unwrap();
    let saved = app.saved();
    app.control.set_ready(true);
    for name in ["tables", "tables_fixed"] {
        common::pins::freeze(&pins.0, name);
    }
    let other = json!({"name": "api", "address": "10.100.0.2", "port": 443, "protocol": "tcp",
                       "backends": [{"address": "10.0.1.3"}]});
    let r = app.call(Method::POST, "/v1/vips", Some(other), &[]).await;
    assert_problem(&r, StatusCode::INTERNAL_SERVER_ERROR, "refused");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the data plane refused the change; "),
        "{detail}"
    );
    let after = app.control.snapshot().await;
    assert_eq!(after.etag, before.etag);
    assert_eq!(app.saved(), saved);
    // The restore is an apply of the previous plan: whether one works on
    // these maps now is whether it did. A 500 that claims the previous
    // state is back when it is not (as it once did whatever happened)
    // fails here.
    let dp = app.control.dataplane().clone();
    let plan = before.plan.clone();
    let restorable = tokio::task::spawn_blocking(move || dp.apply(&plan))
        .await
        .unwrap()
        .is_ok();
    let ready = app.call(Method::GET, "/ready", None, &[]).await.status;
    let metrics = app.call(Method::GET, "/metrics", None, &[]).await.text;
    if restorable {
        assert!(
            detail.contains("; the previous state was restored"),
            "{detail}"
        );
        assert_eq!(
            app.control.dataplane().published_table(&key).unwrap(),
            table
        );
        assert_eq!(ready, StatusCode::OK);
        assert!(metrics.contains("lethe_change_restore_failures_total 0"));
    } else {
        assert!(
            detail.contains(
                "; the previous state could not be restored: the maps may hold part of the change"
            ),
            "{detail}"
        );
        // Not ready while the maps may hold part of the change (retried
        // in the background; frozen maps never take it).
        assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            metrics.contains("lethe_change_restore_failures_total 1"),
            "{metrics}"
        );
    }
    println!("restorable: {restorable}");
}
