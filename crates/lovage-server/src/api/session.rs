//! `/login` trades a token for an HttpOnly cookie (the dashboard's session); `/logout` drops it.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Auth, COOKIE};
use crate::error::{ApiError, Json};
use crate::ServerState;

/// A login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// A token from the token file (its clear text, not the hash).
    pub token: String,
}

/// Checks the token and sets the `lovage_token` cookie (HttpOnly, SameSite=Strict).
#[utoipa::path(post, path = "/login", request_body = Login, responses(
    (status = 204, description = "logged in; the cookie is set"),
    (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<ServerState>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let token = body.token.trim();
    if let Auth::Tokens(t) = &state.auth {
        if t.check(token).is_none() {
            return Err(ApiError::unauthorized("the token is not valid"));
        }
    }
    // The token is the session: nothing kept in the server, so a restart logs nobody out.
    // A token is printable ASCII without `;` (checked by the file's hash only), so refuse any
    // other rather than write a broken header.
    if !token
        .bytes()
        .all(|c| c.is_ascii_graphic() && c != b';' && c != b',')
    {
        return Err(ApiError::bad_request(
            "a token must be printable ASCII without ; or ,",
        ));
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Clears the cookie.
pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// Who the caller is: the dashboard hides mutating buttons from a read token.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Me {
    /// The token's name from the token file (`anonymous` without auth).
    pub name: String,
    /// `read` or `admin`.
    pub scope: String,
}

/// The caller's token name and scope.
#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, body = Me),
    (status = 401, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn me(axum::Extension(caller): axum::Extension<crate::auth::Caller>) -> Json<Me> {
    Json(Me {
        name: caller.name,
        scope: match caller.scope {
            crate::auth::Scope::Read => "read".into(),
            crate::auth::Scope::Admin => "admin".into(),
        },
    })
}

/// `GET /session`: who the browser is logged in as, 200 either way (the dashboard asks before
/// it shows a login form, so a logged-out visit logs no failed request).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SessionInfo {
    /// Whether the request carries a valid credential.
    pub authenticated: bool,
    /// The token's name, when authenticated.
    pub name: Option<String>,
    /// `read` or `admin`, when authenticated.
    pub scope: Option<String>,
}

/// Who the caller is, without failing when nobody is logged in.
#[utoipa::path(get, path = "/session", responses((status = 200, body = SessionInfo)))]
pub async fn session(
    State(state): State<ServerState>,
    extensions: axum::http::Extensions,
    headers: axum::http::HeaderMap,
) -> Json<SessionInfo> {
    let peer = crate::auth::peer(&extensions);
    match crate::auth::authorize_from(&state, &axum::http::Method::GET, &headers, peer) {
        Ok(c) => Json(SessionInfo {
            authenticated: true,
            name: Some(c.name),
            scope: Some(
                match c.scope {
                    crate::auth::Scope::Read => "read",
                    crate::auth::Scope::Admin => "admin",
                }
                .into(),
            ),
        }),
        Err(_) => Json(SessionInfo {
            authenticated: false,
            name: None,
            scope: None,
        }),
    }
}
