//! One error type for the API, rendered as RFC 9457 problem+json, and the
//! extractors that turn every malformed request into one.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::control::{error_chain, ControlError};
use crate::edit::EditError;

/// A problem report (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g. `urn:lethe:invalid-config`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    pub www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            www_authenticate: false,
        }
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let detail = error_chain(&e);
        match e {
            ControlError::Edit(EditError::NoVip(_) | EditError::NoBackend { .. }) => {
                ApiError::not_found(detail)
            }
            // With the configuration as it is; a clash within one
            // submitted document (PUT) is an invalid document, 422.
            ControlError::Edit(
                EditError::VipExists(_) | EditError::BackendExists { .. } | EditError::Conflict(_),
            ) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            ControlError::Edit(EditError::Invalid(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-config", detail)
            }
            ControlError::PreconditionFailed { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "etag-mismatch", detail)
            }
            ControlError::Refused { .. }
            | ControlError::Store { .. }
            | ControlError::Dataplane(_)
            | ControlError::Task(_) => {
                tracing::error!(error = %detail, "change failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("urn:lethe:{}", self.kind),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let mut resp = (self.status, axum::Json(problem)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `Json<T>` whose rejections are problems: 400 (syntax), 422 (wrong
/// types, unknown or missing fields), 415 (not JSON), 413 (too large).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(r: JsonRejection) -> ApiError {
    let status = r.status();
    let kind = match &r {
        JsonRejection::JsonDataError(_) => "invalid-body",
        JsonRejection::JsonSyntaxError(_) => "malformed-json",
        JsonRejection::MissingJsonContentType(_) => "not-json",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        _ => "unreadable-body",
    };
    ApiError::new(status, kind, r.body_text())
}

/// `Query<T>` whose rejections are 400 problems.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::bad_request("invalid-query", r.body_text()))
            }
            Err(r) => Err(ApiError::bad_request("invalid-query", r.body_text())),
        }
    }
}

/// `Path<T>` whose rejections are problems: 400 for a segment that is not
/// UTF-8 once percent-decoded (`/v1/vips/%FF`) or not a `T`; axum's own
/// answer is text/plain.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            // The route and the handler disagree (a 500): the server's
            // fault, named as such.
            Err(r) if r.status().is_server_error() => {
                Err(ApiError::new(r.status(), "internal", r.body_text()))
            }
            Err(r) => Err(ApiError::bad_request("invalid-path", r.body_text())),
        }
    }
}
