//! The one error shape every endpoint answers with, `{"error":{"code","message"}}`, and the
//! extractors that turn axum's own rejections (bad JSON, too large, unknown fields, bad query)
//! into it, so a client never sees a plain-text error or a 5xx for bad input.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lovage_broker::BrokerError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: an HTTP status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: `code` is stable (match on it), `message` says what and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `bad_request`, `not_found`, `unauthorized`, `forbidden`, `broker`, `unsupported`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is wrong; the message says which part.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no credential, or one that is not valid.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid credential that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 409: the request is well formed but the state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500: a fault of the server itself (a panicked blocking task).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<BrokerError> for ApiError {
    /// A broker that cannot be reached is 503 (try again); anything else it reports is 502:
    /// in both cases the fault is behind the server, not in the request.
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Codec(c) => ApiError::bad_request(c.to_string()),
            e @ BrokerError::BadRequest { .. } => ApiError::bad_request(e.to_string()),
            e @ BrokerError::Unsupported { .. } => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", e.to_string())
            }
            e if e.is_transient() => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", e.to_string())
            }
            e => ApiError::new(StatusCode::BAD_GATEWAY, "broker", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body, refused with a JSON error (400 malformed or wrong shape, 413 too large, 415 not
/// JSON) that names the problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    // Axum's 422 (valid JSON, wrong shape) is a 400 here: one status for "fix your body".
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, code, r.body_text())
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters, refused with a 400 JSON error naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::bad_request(r.body_text())
}
