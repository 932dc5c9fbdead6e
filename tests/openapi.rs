//! api/openapi.json is generated from the code (`lethe openapi`); this test
//! fails when the two drift. Regenerate with:
//!   cargo run -q -- openapi > api/openapi.json

#[test]
fn committed_openapi_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api/openapi.json"))
            .expect("api/openapi.json exists");
    let generated = lethe::api::openapi_json();
    assert!(
        committed == generated,
        "api/openapi.json is stale: run `cargo run -q -- openapi > api/openapi.json`"
    );
}

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&lethe::api::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/config", &["get", "put"][..]),
        ("/v1/vips", &["get", "post"]),
        ("/v1/vips/{name}", &["get", "patch", "delete"]),
        ("/v1/vips/{name}/backends", &["get", "post"]),
        (
            "/v1/vips/{name}/backends/{address}",
            &["get", "patch", "delete"],
        ),
        ("/v1/vips/{name}/table", &["get"]),
        ("/v1/trace", &["get"]),
        ("/v1/stats", &["get"]),
        ("/v1/events", &["get"]),
        ("/metrics", &["get"]),
        ("/live", &["get"]),
        ("/ready", &["get"]),
    ] {
        for m in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*m)).is_some(),
                "{m} {path} undocumented"
            );
        }
    }
}
