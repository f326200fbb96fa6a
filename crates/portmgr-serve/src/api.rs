//! The REST API's request and response shapes (those of the port registry it replaces),
//! core errors as responses, and the OpenAPI document generated from these types and the
//! handlers' annotations (`openapi.json` at the crate's root is this document, committed;
//! a test fails when they differ).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portmgr::{Error, ErrorCode, LeaseInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, OpenApi, ToSchema};

/// `POST /ports/allocate`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AllocateRequest {
    /// The service name: unique among live allocations of the registry.
    #[schema(min_length = 1, max_length = 56, example = "web")]
    pub service_name: String,
    /// A service type (`rest-api`, `database`, ...): the port comes from its range.
    #[serde(default)]
    #[schema(example = "rest-api")]
    pub service_type: Option<String>,
    /// Try this port first (`null` or absent: none).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub preferred_port: Option<u16>,
    /// With `preferred_port`: that port or an error (409).
    #[serde(default)]
    pub required: bool,
    /// Hold the port while this process lives (pid and start time), instead of a TTL.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4194304)]
    pub process_id: Option<u32>,
    /// Without `process_id`: seconds the allocation lives without a heartbeat (default:
    /// the server's `--heartbeat-timeout`, 60 s).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    pub ttl_seconds: Option<f64>,
}

/// `POST /ports/release`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReleaseRequest {
    /// The `allocation_id` of `POST /ports/allocate`.
    #[schema(example = "7")]
    pub allocation_id: String,
}

/// One allocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Allocation {
    /// The (first) port.
    pub port: u16,
    /// Every port of the allocation, ascending.
    pub ports: Vec<u16>,
    /// The service name (`null` for an unnamed lease).
    pub service_name: Option<String>,
    /// The service type, when one was given.
    pub service_type: Option<String>,
    /// The registry's lease id, as a string.
    pub allocation_id: String,
    /// When it was allocated (RFC 3339).
    pub allocated_at: String,
    /// When it was last renewed (RFC 3339; the allocation time when never renewed or
    /// held by a process).
    pub last_heartbeat: String,
    /// When it ends without another heartbeat (RFC 3339); `null` when a process holds it.
    pub expires_at: Option<String>,
    /// `"active"`.
    pub status: String,
    /// The process it lives by, when one was given.
    pub process_id: Option<u32>,
    /// The host the port is on (this server's host name).
    pub host: String,
}

impl Allocation {
    /// From the registry's rows of one lease (`infos`, ascending) and its service type.
    pub(crate) fn new(infos: &[&LeaseInfo], service_type: Option<String>, host: &str) -> Option<Allocation> {
        let first = infos.first()?;
        let renewed = match (first.expires_ms, first.ttl_ms) {
            (Some(e), Some(t)) => e.saturating_sub(t).max(first.created_ms),
            _ => first.created_ms,
        };
        Some(Allocation {
            port: first.port,
            ports: infos.iter().map(|i| i.port).collect(),
            service_name: first.name.clone(),
            service_type,
            allocation_id: first.lease_id.to_string(),
            allocated_at: rfc3339(first.created_ms),
            last_heartbeat: rfc3339(renewed),
            expires_at: first.expires_ms.map(rfc3339),
            status: if first.state == "held" || first.state == "pending" { "active".into() } else { first.state.clone() },
            process_id: first.watch_pid,
            host: host.to_string(),
        })
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `POST /ports/allocate`, `POST /ports/heartbeat/{id}`, `GET /ports/service/{name}`,
/// `GET /ports/port/{port}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationResponse {
    /// `true`.
    pub success: bool,
    pub allocation: Allocation,
    /// What was done, in words.
    pub message: String,
}

/// `GET /ports/type/{type}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationsResponse {
    /// `true`.
    pub success: bool,
    pub allocations: Vec<Allocation>,
}

/// `POST /ports/release`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseResponse {
    /// `true`.
    pub success: bool,
    /// The ports freed.
    pub released_ports: Vec<u16>,
    pub message: String,
}

/// `POST /ports/cleanup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CleanupResponse {
    /// `true`.
    pub success: bool,
    /// The ports freed (their leases' owners were gone or their TTL had ended).
    pub freed_ports: Vec<u16>,
    pub message: String,
}

/// `GET /ports/ranges`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RangesResponse {
    /// The default pool, `[start, end]`.
    pub pool: (u16, u16),
    /// Every service type and its range (`null`: the pool).
    pub types: Vec<TypeRange>,
    /// The registry's reserved ports.
    pub reserved: Vec<ReservedSpan>,
}

/// A service type's range.
#[derive(Debug, Serialize, ToSchema)]
pub struct TypeRange {
    #[serde(rename = "type")]
    pub service_type: String,
    pub range: Option<(u16, u16)>,
    pub description: String,
}

/// A reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservedSpan {
    pub start: u16,
    pub end: u16,
    pub reason: Option<String>,
}

/// Every error: `{"success": false, "error": {"code", "kind", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// `false`.
    pub success: bool,
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// portmgr's stable error code (1 to 10, as in every language); the server's own:
    /// 101 unauthorized, 102 forbidden, 103 rate limited, 104 body too large, 105 no
    /// such endpoint.
    pub code: u32,
    /// The kind, in words (`"ports exhausted"`, `"in use"`, `"forbidden"`, ...).
    pub kind: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// An error response: a status and the body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: u32,
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u32, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, kind: kind.into(), message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument as u32, ErrorCode::InvalidArgument.as_str(), message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound as u32, ErrorCode::NotFound.as_str(), message)
    }
}

/// A core error as a response: bad input 400, unknown 404, in use 409, exhausted or a
/// lock timeout 503, another process's lease 403, a registry or system problem 500.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = e.code();
        let status = match code {
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InUse => StatusCode::CONFLICT,
            ErrorCode::Exhausted | ErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotOwner => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code as u32, code.as_str(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            success: false,
            error: ErrorBody { code: self.code, kind: self.kind, message: self.message },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The errors any endpoint may answer with.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum CommonErrors {
    /// Bad input: a malformed body, a bad name or port, an unknown type.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorResponse),
    /// No or a wrong bearer token (a server with `--token-file`).
    #[response(status = 401)]
    Unauthorized(ErrorResponse),
    /// Another local user, or a connection that could not be attributed.
    #[response(status = 403)]
    Forbidden(ErrorResponse),
    /// No such allocation, service, port or endpoint.
    #[response(status = 404)]
    NotFound(ErrorResponse),
    /// The request body is larger than `--max-body`.
    #[response(status = 413)]
    TooLarge(ErrorResponse),
    /// A body without `Content-Type: application/json`.
    #[response(status = 415)]
    NotJson(ErrorResponse),
    /// Rate limited.
    #[response(status = 429)]
    TooMany(ErrorResponse),
    /// No free port, or the registry lock timed out: try again later.
    #[response(status = 503)]
    Unavailable(ErrorResponse),
}

/// The gRPC-style port server's `dump` body: every lease it made, by port.
pub(crate) type Dump = BTreeMap<u16, Allocation>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "portmgr serve",
        description = "The port registry REST API and the gRPC-style port server over one portmgr registry: every allocation is an ordinary registry lease, shared with every Rust, C, Python and shell user on the host.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::rest::allocate,
        crate::rest::release,
        crate::rest::heartbeat,
        crate::rest::cleanup,
        crate::rest::directory,
        crate::rest::by_service,
        crate::rest::by_port,
        crate::rest::by_type,
        crate::rest::overview,
        crate::rest::stats,
        crate::rest::health,
        crate::rest::health_history,
        crate::rest::ranges,
        crate::rest::grpc_get,
        crate::rest::grpc_drop,
        crate::rest::grpc_version,
        crate::rest::grpc_dump,
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The optional bearer token, as a security scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document of the REST API, pretty-printed (what `GET /openapi.json` serves
/// and `openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
