//! The HTTP side: the port registry REST API (`/ports/...`), the gRPC-style port server
//! (`/get`, `/drop/{port}`, `/version_number`, `/dump`) and `/openapi.json`. Each handler
//! turns its request into core calls (run off the async workers: the core blocks on the
//! registry lock) and the result or core error into a response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portmgr::cli::ServeOptions;
use portmgr::mapping::ServiceSpec;
use portmgr::{LeaseInfo, Request as PortRequest};

use crate::State;
use crate::api::*;
use crate::peer::{Peer, Refusal};

type St = Arc<State>;

/// How long a port from the gRPC-style `/get` is leased.
const GET_TTL: Duration = Duration::from_secs(600);

pub(crate) fn router(state: St, opts: &ServeOptions) -> Router {
    let mut app = Router::new()
        .route("/ports/allocate", post(allocate))
        .route("/ports/release", post(release))
        .route("/ports/heartbeat/{allocation_id}", post(heartbeat))
        .route("/ports/cleanup", post(cleanup))
        .route("/ports/directory", get(directory))
        .route("/ports/service/{name}", get(by_service))
        .route("/ports/port/{port}", get(by_port))
        .route("/ports/type/{service_type}", get(by_type))
        .route("/ports/overview", get(overview))
        .route("/ports/stats", get(stats))
        .route("/ports/health", get(health))
        .route("/ports/health/history", get(health_history))
        .route("/ports/ranges", get(ranges))
        .route("/get", get(grpc_get))
        .route("/drop/{port}", get(grpc_drop))
        .route("/version_number", get(grpc_version))
        .route("/dump", get(grpc_dump))
        .route("/openapi.json", get(openapi))
        .fallback(no_such_endpoint)
        .layer(DefaultBodyLimit::max(opts.max_body))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state);
    if !opts.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = opts.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    app
}

/// Who may ask (see `peer`): 403, 401 or 429 before anything else is done.
async fn guard(AxState(state): AxState<St>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match state.guard.check(&peer, auth) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Forbidden(m)) => ApiError::new(StatusCode::FORBIDDEN, 102, "forbidden", m).into_response(),
        Err(Refusal::Unauthorized(m)) => {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, 101, "unauthorized", m).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Err(Refusal::TooMany) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            103,
            "rate limited",
            "too many requests from this client: slow down (the server's --rate-limit)",
        )
        .into_response(),
    }
}

async fn no_such_endpoint(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        105,
        "no such endpoint",
        format!("no endpoint {} {}: see /openapi.json", req.method(), req.uri().path()),
    )
}

/// `axum::Json` whose rejections are this API's JSON errors (400, 413 for a body past the
/// limit, 415 without a JSON content type).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => {
                // Bad input is 400 (a malformed or mistyped body alike), a body past the
                // limit 413, a body that does not say it is JSON 415.
                let (status, code, kind) = match r.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, 104, "body too large"),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 1, "invalid argument"),
                    _ => (StatusCode::BAD_REQUEST, 1, "invalid argument"),
                };
                Err(ApiError::new(status, code, kind, r.body_text()))
            }
        }
    }
}

/// Run a core call (it may wait for the registry lock) on this worker, with the runtime
/// told that it blocks (`block_in_place`: other tasks move to the other worker; no hand-
/// over to a thread pool, which costs more than most core calls take).
async fn blocking<T: Send + 'static>(
    state: &St,
    f: impl FnOnce(&State) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::block_in_place(|| f(state))
}

/// This host's name, for `Allocation::host` (read once).
fn host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
    })
    .clone()
}

/// The allocations of the registry, by lease id (views over both tables).
fn allocations(state: &State, only: impl Fn(&LeaseInfo) -> bool) -> Result<Vec<Allocation>, ApiError> {
    let (live, services) = state.svc.list_with_leases()?;
    let mut by_lease: BTreeMap<u64, Vec<&LeaseInfo>> = BTreeMap::new();
    for i in live.iter().filter(|i| only(i)) {
        by_lease.entry(i.lease_id).or_default().push(i);
    }
    let host = host();
    Ok(by_lease
        .values()
        .filter_map(|infos| {
            let service_type = services.iter().find(|s| s.lease_id == infos[0].lease_id).and_then(|s| s.service_type.clone());
            Allocation::new(infos, service_type, &host)
        })
        .collect())
}

fn one(state: &State, id: u64) -> Result<Allocation, ApiError> {
    allocations(state, |i| i.lease_id == id)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no live allocation {id}")))
}

fn parse_id(s: &str) -> Result<u64, ApiError> {
    s.trim().parse::<u64>().ok().filter(|&id| id > 0).ok_or_else(|| {
        ApiError::not_found(format!("no live allocation {:?}: allocation ids are the numbers POST /ports/allocate gives", shorten(s)))
    })
}

fn parse_port(s: &str) -> Result<u16, ApiError> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{:?} is not a port: give a number from 1 to 65535", shorten(s))))
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Allocate a port for a service: it lives while `process_id` lives, else for
/// `ttl_seconds` (default: the server's heartbeat timeout), renewed by heartbeats.
#[utoipa::path(post, path = "/ports/allocate", tag = "port registry", request_body = AllocateRequest,
    responses((status = 200, description = "Allocated", body = AllocationResponse),
              (status = 409, description = "The name is held, or a required preferred port is taken", body = ErrorResponse),
              CommonErrors))]
pub(crate) async fn allocate(AxState(state): AxState<St>, ApiJson(body): ApiJson<AllocateRequest>) -> Result<Json<AllocationResponse>, ApiError> {
    let heartbeat = state.heartbeat;
    let allocation = blocking(&state, move |st| {
        let mut req = PortRequest::new().name(body.service_name.clone());
        if let Some(p) = body.preferred_port.filter(|&p| p != 0) {
            req = req.preferred(p, body.required);
        } else if body.required {
            return Err(ApiError::bad_request("required needs a preferred_port"));
        }
        match (body.process_id, body.ttl_seconds) {
            (Some(pid), _) => req = req.watch_pid(pid),
            (None, Some(s)) => {
                let ttl = Duration::try_from_secs_f64(s)
                    .map_err(|_| ApiError::bad_request(format!("ttl_seconds must be a positive number of seconds, not {s}")))?;
                req = req.ttl(ttl);
            }
            (None, None) => req = req.ttl(heartbeat),
        }
        let spec = ServiceSpec { service_type: body.service_type.clone(), ..ServiceSpec::new() };
        let lease = portmgr::mapping::allocate(&st.reg, &req, &spec)?;
        let (id, port) = (lease.id(), lease.port());
        // Detached: it lives by its process or TTL, never by this server.
        lease.keep()?;
        // The new lease's own record (one port): no scan of the whole table.
        let info = st.reg.get_by_port(port)?.filter(|i| i.lease_id == id);
        match info {
            Some(i) => Allocation::new(&[&i], body.service_type, &host())
                .ok_or_else(|| ApiError::not_found(format!("allocation {id} ended at once"))),
            None => Err(ApiError::not_found(format!("allocation {id} ended at once (a TTL shorter than the call?)"))),
        }
    })
    .await?;
    let message = format!("allocated port {} to {:?}", allocation.port, allocation.service_name.as_deref().unwrap_or(""));
    Ok(Json(AllocationResponse { success: true, allocation, message }))
}

/// Release an allocation (all its ports).
#[utoipa::path(post, path = "/ports/release", tag = "port registry", request_body = ReleaseRequest,
    responses((status = 200, description = "Released", body = ReleaseResponse), CommonErrors))]
pub(crate) async fn release(AxState(state): AxState<St>, ApiJson(body): ApiJson<ReleaseRequest>) -> Result<Json<ReleaseResponse>, ApiError> {
    let id = parse_id(&body.allocation_id)?;
    let ports = blocking(&state, move |st| Ok(st.reg.release_id(id)?)).await?;
    Ok(Json(ReleaseResponse { success: true, message: format!("released allocation {id}"), released_ports: ports }))
}

/// Renew an allocation by its own TTL (the heartbeat of an allocation without a process).
#[utoipa::path(post, path = "/ports/heartbeat/{allocation_id}", tag = "port registry",
    params(("allocation_id" = String, Path, description = "The allocation's id")),
    responses((status = 200, description = "Renewed", body = AllocationResponse), CommonErrors))]
pub(crate) async fn heartbeat(AxState(state): AxState<St>, Path(allocation_id): Path<String>) -> Result<Json<AllocationResponse>, ApiError> {
    let id = parse_id(&allocation_id)?;
    let allocation = blocking(&state, move |st| {
        st.reg.renew_id(id, None)?;
        one(st, id)
    })
    .await?;
    Ok(Json(AllocationResponse { success: true, allocation, message: format!("renewed allocation {id}") }))
}

/// Free every allocation whose process is gone or whose TTL ended.
#[utoipa::path(post, path = "/ports/cleanup", tag = "port registry", responses((status = 200, description = "Cleaned up", body = CleanupResponse), CommonErrors))]
pub(crate) async fn cleanup(AxState(state): AxState<St>) -> Result<Json<CleanupResponse>, ApiError> {
    let freed = blocking(&state, |st| Ok(st.reg.gc()?)).await?;
    let ports: Vec<u16> = freed.iter().map(|i| i.port).collect();
    Ok(Json(CleanupResponse { success: true, message: format!("freed {} ports", ports.len()), freed_ports: ports }))
}

/// Every live named allocation, keyed by service name.
#[utoipa::path(get, path = "/ports/directory", tag = "port registry",
    responses((status = 200, description = "The directory", body = BTreeMap<String, Allocation>), CommonErrors))]
pub(crate) async fn directory(AxState(state): AxState<St>) -> Result<Json<BTreeMap<String, Allocation>>, ApiError> {
    let all = blocking(&state, |st| allocations(st, |i| i.name.is_some())).await?;
    Ok(Json(all.into_iter().filter_map(|a| Some((a.service_name.clone()?, a))).collect()))
}

/// The allocation of a service.
#[utoipa::path(get, path = "/ports/service/{name}", tag = "port registry", params(("name" = String, Path, description = "The service name")),
    responses((status = 200, description = "Found", body = AllocationResponse), CommonErrors))]
pub(crate) async fn by_service(AxState(state): AxState<St>, Path(name): Path<String>) -> Result<Json<AllocationResponse>, ApiError> {
    let n = name.clone();
    let found = blocking(&state, move |st| allocations(st, |i| i.name.as_deref() == Some(n.as_str()))).await?;
    let allocation = found.into_iter().next().ok_or_else(|| ApiError::not_found(format!("no live service named {:?}", shorten(&name))))?;
    Ok(Json(AllocationResponse { success: true, allocation, message: "found".into() }))
}

/// The allocation holding a port.
#[utoipa::path(get, path = "/ports/port/{port}", tag = "port registry", params(("port" = String, Path, description = "The port, 1 to 65535")),
    responses((status = 200, description = "Found", body = AllocationResponse), CommonErrors))]
pub(crate) async fn by_port(AxState(state): AxState<St>, Path(port): Path<String>) -> Result<Json<AllocationResponse>, ApiError> {
    let port = parse_port(&port)?;
    let found = blocking(&state, move |st| {
        let id = st.reg.get_by_port(port)?.map(|i| i.lease_id);
        match id {
            Some(id) => allocations(st, |i| i.lease_id == id),
            None => Ok(Vec::new()),
        }
    })
    .await?;
    let allocation = found.into_iter().next().ok_or_else(|| ApiError::not_found(format!("port {port} is not allocated")))?;
    Ok(Json(AllocationResponse { success: true, allocation, message: "found".into() }))
}

/// The allocations of a service type.
#[utoipa::path(get, path = "/ports/type/{service_type}", tag = "port registry", params(("service_type" = String, Path, description = "The service type")),
    responses((status = 200, description = "The type's allocations", body = AllocationsResponse), CommonErrors))]
pub(crate) async fn by_type(AxState(state): AxState<St>, Path(service_type): Path<String>) -> Result<Json<AllocationsResponse>, ApiError> {
    let allocations = blocking(&state, move |st| {
        let ids: Vec<u64> = st.svc.by_type(&service_type)?.iter().map(|s| s.lease_id).collect();
        allocations(st, |i| ids.contains(&i.lease_id))
    })
    .await?;
    Ok(Json(AllocationsResponse { success: true, allocations }))
}

/// Every live service by name, the port -> name map, names by type, and the statistics.
#[utoipa::path(get, path = "/ports/overview", tag = "port registry", responses((status = 200, description = "The overview (as `portmgr overview --json`)", body = Object), CommonErrors))]
pub(crate) async fn overview(AxState(state): AxState<St>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&state, |st| Ok(Json(serde_json::to_value(st.svc.overview()?).unwrap_or_default()))).await
}

/// The statistics: the pool, every range in use, per service type.
#[utoipa::path(get, path = "/ports/stats", tag = "port registry", responses((status = 200, description = "As `portmgr stats --json`", body = Object), CommonErrors))]
pub(crate) async fn stats(AxState(state): AxState<St>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&state, |st| Ok(Json(serde_json::to_value(st.svc.stats_full()?).unwrap_or_default()))).await
}

/// The health report over every range in use (threshold 90%).
#[utoipa::path(get, path = "/ports/health", tag = "port registry", responses((status = 200, description = "The core's health report (`ok`, `ranges`, `problems`)", body = Object), CommonErrors))]
pub(crate) async fn health(AxState(state): AxState<St>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&state, |st| Ok(Json(serde_json::to_value(st.svc.health(0.9)?).unwrap_or_default()))).await
}

/// The recorded health checks, oldest first (the last 256: the server's own monitor,
/// `--health-interval`, and any `portmgr health --watch` on the host record them).
#[utoipa::path(get, path = "/ports/health/history", tag = "port registry", responses((status = 200, description = "The health history (as `portmgr health --history --json`): an array of checks, each `seq`, `time_ms`, `ok`, `held`, `problem_count`, `problems` (`kind`, `range`, `port`, `message`) and `changed`", body = Vec<Object>), CommonErrors))]
pub(crate) async fn health_history(AxState(state): AxState<St>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&state, |st| Ok(Json(serde_json::to_value(st.svc.health_history()?).unwrap_or_default()))).await
}

/// The default pool, every service type's range, and the reserved ports.
#[utoipa::path(get, path = "/ports/ranges", tag = "port registry", responses((status = 200, description = "The ranges", body = RangesResponse), CommonErrors))]
pub(crate) async fn ranges(AxState(state): AxState<St>) -> Result<Json<RangesResponse>, ApiError> {
    blocking(&state, |st| {
        let pool = st.reg.default_pool()?;
        let types = st
            .svc
            .types()
            .types()
            .into_iter()
            .map(|t| TypeRange { range: t.range.map(|r| (r.start(), r.end())), description: t.description, service_type: t.name })
            .collect();
        let reserved = st.reg.reserved()?.into_iter().map(|r| ReservedSpan { start: r.start, end: r.end, reason: r.reason }).collect();
        Ok(Json(RangesResponse { pool: (pool.start(), pool.end()), types, reserved }))
    })
    .await
}

/// gRPC-style port server: a port, as text, leased for 600 s unless dropped.
#[utoipa::path(get, path = "/get", tag = "port server", responses((status = 200, description = "A port", body = String, content_type = "text/plain"), CommonErrors))]
pub(crate) async fn grpc_get(AxState(state): AxState<St>) -> Result<String, ApiError> {
    blocking(&state, |st| {
        let lease = st.reg.allocate(&PortRequest::new().ttl(GET_TTL))?;
        let port = lease.port();
        lease.keep()?;
        Ok(port.to_string())
    })
    .await
}

/// gRPC-style port server: give a port back.
#[utoipa::path(get, path = "/drop/{port}", tag = "port server", params(("port" = String, Path, description = "The port")),
    responses((status = 200, description = "Dropped", body = String, content_type = "text/plain"), CommonErrors))]
pub(crate) async fn grpc_drop(AxState(state): AxState<St>, Path(port): Path<String>) -> Result<String, ApiError> {
    let port = parse_port(&port)?;
    blocking(&state, move |st| {
        st.reg.release_port(port)?;
        Ok(format!("dropped {port}"))
    })
    .await
}

/// gRPC-style port server: the server's version, an integer.
#[utoipa::path(get, path = "/version_number", tag = "port server", responses((status = 200, description = "The version, as an integer", body = String, content_type = "text/plain"), CommonErrors))]
pub(crate) async fn grpc_version() -> String {
    let v: Vec<u32> = env!("CARGO_PKG_VERSION").split('.').filter_map(|p| p.parse().ok()).collect();
    (v.first().copied().unwrap_or(0) * 10000 + v.get(1).copied().unwrap_or(0) * 100 + v.get(2).copied().unwrap_or(0)).to_string()
}

/// gRPC-style port server: every live allocation, by port, as JSON.
#[utoipa::path(get, path = "/dump", tag = "port server", responses((status = 200, description = "Every allocation, keyed by port", body = BTreeMap<String, Allocation>), CommonErrors))]
pub(crate) async fn grpc_dump(AxState(state): AxState<St>) -> Result<Json<Dump>, ApiError> {
    let all = blocking(&state, |st| allocations(st, |_| true)).await?;
    Ok(Json(all.into_iter().map(|a| (a.port, a)).collect()))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}
