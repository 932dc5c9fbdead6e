//! The REST API under /v1: `fn router(state) -> Router`. Handlers are short:
//! they parse, call the controller, and shape the answer. Every error is
//! problem+json (see `error`); the OpenAPI document in api/ is generated
//! from these handlers (`lethe openapi`).

mod error;
mod metrics;
mod views;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi};

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
pub use views::*;

use crate::config::{Backend, Config, Protocol, Vip};
use crate::control::{self, Controller, Snapshot};
use crate::edit::{BackendPatch, Change, VipPatch};
use crate::events::Event;

/// Largest request body: a configuration of the maps' full size fits.
pub const BODY_LIMIT: usize = 4 << 20;

#[derive(Clone)]
pub struct ApiState {
    pub control: Arc<Controller>,
    /// With a token, every mutation needs `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// Cancelled when the daemon stops: ends event streams, so a graceful
    /// shutdown does not wait for readers that never leave.
    pub shutdown: CancellationToken,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/config", get(get_config).put(put_config))
        .route("/v1/vips", get(list_vips).post(add_vip))
        .route(
            "/v1/vips/{name}",
            get(get_vip).patch(patch_vip).delete(delete_vip),
        )
        .route(
            "/v1/vips/{name}/backends",
            get(list_backends).post(add_backend),
        )
        .route(
            "/v1/vips/{name}/backends/{address}",
            get(get_backend).patch(patch_backend).delete(delete_backend),
        )
        .route("/v1/vips/{name}/table", get(get_table))
        .route("/v1/trace", get(trace))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics::metrics))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see api/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed on this route",
    )
}

/// Mutations need the token when one is set; reads never do.
async fn authorize(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if let (Some(token), false) = (&state.token, read_only) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return ApiError::unauthorized("this change needs Authorization: Bearer <token>")
                    .into_response()
            }
            Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                return ApiError::unauthorized("the bearer token is not the daemon's")
                    .into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The If-Match header's value, a list of ETags (`control::if_match_allows`).
/// One that is not text (obs-text bytes) matches no ETag: the change is
/// refused (412), never applied as if the header were absent.
fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

fn with_etag(snapshot: &Snapshot, status: StatusCode, body: impl IntoResponse) -> Response {
    let mut resp = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&snapshot.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn parse_address(s: &str) -> Result<IpAddr, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid-address",
            format!("{s:?} is not an IPv4 or IPv6 address"),
        )
    })
}

fn find_vip<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a Vip, ApiError> {
    snapshot
        .config
        .vip(name)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {name:?}")))
}

async fn change(
    state: &ApiState,
    headers: &HeaderMap,
    change: Change,
) -> Result<Snapshot, ApiError> {
    Ok(state
        .control
        .change(change, if_match(headers).as_deref())
        .await?)
}

/// The whole desired state.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "The configuration; its ETag in the ETag header", body = Config)))]
async fn get_config(State(s): State<ApiState>) -> Response {
    let snap = s.control.snapshot().await;
    with_etag(&snap, StatusCode::OK, axum::Json(&snap.config))
}

/// Replaces the whole desired state, as one transaction. Idempotent.
#[utoipa::path(put, path = "/v1/config", tag = "config", request_body = Config,
    params(("If-Match" = Option<String>, Header, description = "apply only if the configuration still has this ETag")),
    responses(
        (status = 200, description = "Applied (or already so)", body = Config),
        (status = 412, description = "The ETag did not match", body = Problem),
        (status = 422, description = "Invalid configuration; nothing changed", body = Problem),
        (status = 500, description = "Could not be applied or saved; the detail says whether the previous state is back", body = Problem)))]
async fn put_config(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ApiJson(config): ApiJson<Config>,
) -> Result<Response, ApiError> {
    let snap = change(&s, &headers, Change::ReplaceConfig(config)).await?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(&snap.config)))
}

#[utoipa::path(get, path = "/v1/vips", tag = "vips",
    responses((status = 200, description = "Every VIP", body = Vec<Vip>)))]
async fn list_vips(State(s): State<ApiState>) -> Response {
    let snap = s.control.snapshot().await;
    with_etag(&snap, StatusCode::OK, axum::Json(&snap.config.vips))
}

#[utoipa::path(post, path = "/v1/vips", tag = "vips", request_body = Vip,
    responses(
        (status = 201, description = "Created", body = Vip),
        (status = 409, description = "A VIP of that name exists, another VIP has its address, port and protocol, or a nat backend would serve two VIPs", body = Problem),
        (status = 412, body = Problem),
        (status = 422, description = "Invalid; nothing changed", body = Problem),
        (status = 500, body = Problem)))]
async fn add_vip(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ApiJson(vip): ApiJson<Vip>,
) -> Result<Response, ApiError> {
    let name = vip.name.clone();
    let snap = change(&s, &headers, Change::AddVip(vip)).await?;
    let vip = find_vip(&snap, &name)?;
    let mut resp = with_etag(&snap, StatusCode::CREATED, axum::Json(vip));
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/vips/{name}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/vips/{name}", tag = "vips", params(("name" = String, Path)),
    responses((status = 200, body = Vip), (status = 404, body = Problem)))]
async fn get_vip(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let snap = s.control.snapshot().await;
    let vip = find_vip(&snap, &name)?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(vip)))
}

#[utoipa::path(patch, path = "/v1/vips/{name}", tag = "vips", params(("name" = String, Path)), request_body = VipPatch,
    responses((status = 200, body = Vip), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem), (status = 500, body = Problem)))]
async fn patch_vip(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<VipPatch>,
) -> Result<Response, ApiError> {
    let snap = change(&s, &headers, Change::PatchVip(name.clone(), patch)).await?;
    let vip = find_vip(&snap, &name)?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(vip)))
}

#[utoipa::path(delete, path = "/v1/vips/{name}", tag = "vips", params(("name" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
async fn delete_vip(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snap = change(&s, &headers, Change::DeleteVip(name)).await?;
    Ok(with_etag(&snap, StatusCode::NO_CONTENT, ()))
}

#[utoipa::path(get, path = "/v1/vips/{name}/backends", tag = "backends", params(("name" = String, Path)),
    responses((status = 200, body = Vec<BackendView>), (status = 404, body = Problem)))]
async fn list_backends(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let snap = s.control.snapshot().await;
    let views = backend_views(&snap, &s.control.health(), &name)?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(views)))
}

#[utoipa::path(post, path = "/v1/vips/{name}/backends", tag = "backends", params(("name" = String, Path)), request_body = Backend,
    responses((status = 201, body = BackendView), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem), (status = 500, body = Problem)))]
async fn add_backend(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(backend): ApiJson<Backend>,
) -> Result<Response, ApiError> {
    let address = backend.address;
    let snap = change(&s, &headers, Change::AddBackend(name.clone(), backend)).await?;
    let view = backend_view(&snap, &s.control.health(), &name, address)?;
    let mut resp = with_etag(&snap, StatusCode::CREATED, axum::Json(view));
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/vips/{name}/backends/{address}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/vips/{name}/backends/{address}", tag = "backends",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = BackendView), (status = 404, body = Problem)))]
async fn get_backend(
    State(s): State<ApiState>,
    ApiPath((name, address)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let address = parse_address(&address)?;
    let snap = s.control.snapshot().await;
    let view = backend_view(&snap, &s.control.health(), &name, address)?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(view)))
}

#[utoipa::path(patch, path = "/v1/vips/{name}/backends/{address}", tag = "backends",
    params(("name" = String, Path), ("address" = String, Path)), request_body = BackendPatch,
    responses((status = 200, body = BackendView), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem), (status = 500, body = Problem)))]
async fn patch_backend(
    State(s): State<ApiState>,
    ApiPath((name, address)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<BackendPatch>,
) -> Result<Response, ApiError> {
    let address = parse_address(&address)?;
    let snap = change(
        &s,
        &headers,
        Change::PatchBackend(name.clone(), address, patch),
    )
    .await?;
    let view = backend_view(&snap, &s.control.health(), &name, address)?;
    Ok(with_etag(&snap, StatusCode::OK, axum::Json(view)))
}

#[utoipa::path(delete, path = "/v1/vips/{name}/backends/{address}", tag = "backends",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
async fn delete_backend(
    State(s): State<ApiState>,
    ApiPath((name, address)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let address = parse_address(&address)?;
    let snap = change(&s, &headers, Change::DeleteBackend(name, address)).await?;
    Ok(with_etag(&snap, StatusCode::NO_CONTENT, ()))
}

/// A VIP's Maglev table: size, digest (as planned and as the kernel holds
/// it), and each backend's slots and share.
#[utoipa::path(get, path = "/v1/vips/{name}/table", tag = "vips", params(("name" = String, Path)),
    responses((status = 200, body = TableView), (status = 404, body = Problem)))]
async fn get_table(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<TableView>, ApiError> {
    let snap = s.control.snapshot().await;
    find_vip(&snap, &name)?;
    let planned = snap.plan.vip_by_name(&name).expect("plan follows config");
    let published = s.control.published_digest(planned.key()).await?;
    Ok(axum::Json(table_view(planned, published)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    /// Client address.
    #[param(value_type = String)]
    pub src: IpAddr,
    pub sport: u16,
    /// VIP address.
    #[param(value_type = String)]
    pub dst: IpAddr,
    pub dport: u16,
    /// tcp (default) or udp.
    #[param(value_type = Option<String>)]
    pub proto: Option<Protocol>,
}

/// Which backend a flow gets, and why: from the reference model, and from
/// the kernel program running a probe packet (BPF_PROG_TEST_RUN).
#[utoipa::path(get, path = "/v1/trace", tag = "debug", params(TraceQuery),
    responses((status = 200, body = TraceView), (status = 400, body = Problem)))]
async fn trace(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<TraceQuery>,
) -> Result<axum::Json<TraceView>, ApiError> {
    if q.src.is_ipv4() != q.dst.is_ipv4() {
        return Err(ApiError::bad_request(
            "invalid-query",
            "src and dst must be of one address family",
        ));
    }
    let flow = control::flow(
        q.src,
        q.sport,
        q.dst,
        q.dport,
        q.proto.unwrap_or(Protocol::Tcp),
    );
    let report = s.control.trace(flow).await?;
    Ok(axum::Json(trace_view(&report)))
}

#[utoipa::path(get, path = "/v1/stats", tag = "stats", responses((status = 200, body = StatsView)))]
async fn stats(State(s): State<ApiState>) -> Result<axum::Json<StatsView>, ApiError> {
    let stats = s.control.stats().await?;
    let snap = s.control.snapshot().await;
    Ok(axum::Json(stats_view(&stats, &s.control, &snap)))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events of this VIP.
    pub vip: Option<String>,
    /// Only events of this backend.
    #[param(value_type = Option<String>)]
    pub backend: Option<IpAddr>,
    /// Only decisions with this verdict: tx, redirect, pass, drop, aborted.
    pub verdict: Option<String>,
    /// Only events of this kind: decision, health, fail_open, config.
    pub kind: Option<String>,
}

impl EventQuery {
    fn check(&self) -> Result<(), ApiError> {
        if let Some(k) = &self.kind {
            if !["decision", "health", "fail_open", "config"].contains(&k.as_str()) {
                return Err(ApiError::bad_request(
                    "invalid-query",
                    format!("kind {k:?}: use decision, health, fail_open or config"),
                ));
            }
        }
        if let Some(v) = &self.verdict {
            if !["tx", "redirect", "pass", "drop", "aborted"].contains(&v.as_str()) {
                return Err(ApiError::bad_request(
                    "invalid-query",
                    format!("verdict {v:?}: use tx, redirect, pass, drop or aborted"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `e` passes the filters. `lost` notices always do.
    pub fn wants(&self, e: &Event) -> bool {
        if matches!(e, Event::Lost { .. }) {
            return true;
        }
        self.kind.as_deref().is_none_or(|k| k == e.kind())
            && self.vip.as_deref().is_none_or(|v| e.vip() == Some(v))
            && self.backend.is_none_or(|b| e.backend() == Some(b))
            && self
                .verdict
                .as_deref()
                .is_none_or(|v| e.verdict() == Some(v))
    }
}

/// The event stream (Server-Sent Events): sampled decisions (see a VIP's
/// event_sample_rate), health transitions, fail-open changes and accepted
/// configuration changes. A reader that falls behind gets a `lost` event
/// saying how many it missed; it never slows other readers.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "text/event-stream of Event", content_type = "text/event-stream", body = Event),
              (status = 400, body = Problem)))]
async fn events(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    q.check()?;
    let reader = s.control.events.reader();
    let stream =
        futures_util::stream::unfold(
            reader,
            |mut r| async move { r.next().await.map(|e| (e, r)) },
        )
        .filter_map(move |event| {
            q.wants(&event).then(|| {
                Ok::<_, Infallible>(
                    SseEvent::default()
                        .event(event.kind())
                        .json_data(&*event)
                        .unwrap_or_default(),
                )
            })
        });
    let stream = futures_util::StreamExt::take_until(stream, s.shutdown.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(get, path = "/live", tag = "health", responses((status = 200, description = "The daemon runs")))]
async fn live() -> &'static str {
    "live\n"
}

#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, description = "Attached and synced"), (status = 503, body = Problem)))]
async fn ready(State(s): State<ApiState>) -> Result<&'static str, ApiError> {
    if s.control.is_ready() {
        Ok("ready\n")
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "not attached or not synced yet",
        ))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lethe",
        description = "A stateless L4 load balancer on XDP: its control API."
    ),
    paths(
        get_config,
        put_config,
        list_vips,
        add_vip,
        get_vip,
        patch_vip,
        delete_vip,
        list_backends,
        add_backend,
        get_backend,
        patch_backend,
        delete_backend,
        get_table,
        trace,
        stats,
        metrics::metrics,
        events,
        live,
        ready
    ),
    components(schemas(Problem, Config, Vip, Backend, VipPatch, BackendPatch))
)]
pub struct ApiDoc;

/// The OpenAPI document, as committed in api/openapi.json.
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}
