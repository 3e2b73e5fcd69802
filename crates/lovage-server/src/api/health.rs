//! `/healthz` (the process answers) and `/readyz` (the broker answers too).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{b, blocking};
use crate::error::{ApiError, Json};
use crate::ServerState;

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The broker answers a read: 200, or 503 with the broker's error.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Health),
    (status = 503, body = crate::error::ErrorBody)))]
pub async fn readyz(State(state): State<ServerState>) -> Result<Json<Health>, ApiError> {
    blocking(&state, |app| b(app.backend().admin().stats()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("{:?}", e).chars().take(500).collect::<String>(),
            )
        })?;
    Ok(Json(Health { status: "ok" }))
}
