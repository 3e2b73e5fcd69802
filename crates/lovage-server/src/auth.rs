//! Who may do what: bearer tokens with a scope (`read` or `admin`), kept as SHA-256 hashes in
//! the token file, also accepted from an HttpOnly cookie the browser gets at `/login`.
//!
//! A mutation carried by the cookie must also carry the header `X-Lovage-Csrf` and, when the
//! browser sends one, an `Origin` naming this host: a page on another site can make the browser
//! send the cookie, but not that header (it would need a CORS preflight this server never
//! grants). A bearer token is never sent by a browser on its own, so it needs neither.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::ServerState;

/// The cookie `/login` sets.
pub const COOKIE: &str = "lovage_token";
/// The header a cookie-carried mutation must send (any value).
pub const CSRF_HEADER: &str = "x-lovage-csrf";

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every GET: the dashboard and the API, without changing anything.
    Read,
    /// Everything: send, revoke, retry, purge, pause, control.
    Admin,
}

/// The accepted tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    hash: [u8; 32],
    scope: Scope,
    name: String,
}

/// How requests are checked.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Tokens from a token file.
    Tokens(Arc<Tokens>),
    /// Everyone is admin (`--insecure-no-auth`, or a loopback bind with no token file).
    Open,
}

/// Sign-in by a reverse proxy (oauth2-proxy, nginx `auth_request`, ...): a request from a
/// trusted peer that carries the proxy's user header is that user's, with scope read unless
/// the user is one of `admins`. The header is believed from trusted peers only (anyone else
/// could set it); without it, tokens apply as before.
#[derive(Debug, Clone)]
pub struct ProxyAuth {
    header: HeaderName,
    trusted: Vec<IpAddr>,
    admins: Vec<String>,
}

/// The longest user name a proxy header may carry.
const MAX_USER_LEN: usize = 256;

impl ProxyAuth {
    /// Trusts `header` (e.g. `X-Forwarded-User`) from the peers `trusted`; `admins` get scope
    /// admin. An invalid header name or an empty peer list is refused, named.
    pub fn new(
        header: &str,
        trusted: Vec<IpAddr>,
        admins: Vec<String>,
    ) -> Result<ProxyAuth, String> {
        let header = HeaderName::from_bytes(header.trim().as_bytes())
            .map_err(|_| format!("--trust-user-header {header:?}: not a valid HTTP header name"))?;
        if trusted.is_empty() {
            return Err(
                "--trusted-proxy: no address given; the user header would be believed from nobody"
                    .into(),
            );
        }
        Ok(ProxyAuth {
            header,
            trusted: trusted.into_iter().map(|ip| ip.to_canonical()).collect(),
            admins: admins
                .into_iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        })
    }

    /// The header it trusts.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The caller the proxy vouches for: `None` when the peer is not trusted or the header is
    /// absent (tokens decide then); an error for a bad user name, a read-only user's mutation,
    /// or a mutation without the CSRF header (the proxy's own cookie rides on cross-site
    /// requests as a token cookie would).
    fn caller(
        &self,
        peer: Option<IpAddr>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, ApiError> {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return Ok(None);
        };
        if !self.trusted.contains(&peer) {
            return Ok(None);
        }
        let Some(value) = headers.get(&self.header) else {
            return Ok(None);
        };
        let name = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.len() <= MAX_USER_LEN)
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "header {}: not a user name (1-{MAX_USER_LEN} visible ASCII characters)",
                    self.header
                ))
            })?;
        let scope = if self.admins.iter().any(|a| a == name) {
            Scope::Admin
        } else {
            Scope::Read
        };
        if is_mutation(method) {
            if scope < Scope::Admin {
                return Err(ApiError::forbidden(format!(
                    "user {name:?} has scope read; this needs admin (--proxy-admins)"
                )));
            }
            csrf_ok(headers)?;
        }
        Ok(Some(Caller {
            scope,
            name: name.to_owned(),
        }))
    }
}

/// The peer address of a request, when the server was started with connection info (a router
/// mounted in a user's own app without it has none, and trusts no proxy header).
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The hex SHA-256 of a token, as the token file stores it.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Parses a token file: one token a line, `SCOPE sha256:HEX [NAME]`, `#` comments and blank
    /// lines skipped. `lovage server --hash-token` prints such a line.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{origin}:{}", n + 1);
            let mut parts = line.split_whitespace();
            let scope = match parts.next() {
                Some("read") => Scope::Read,
                Some("admin") => Scope::Admin,
                other => {
                    return Err(format!(
                        "{}: scope {:?}: expected `read` or `admin` (line format: SCOPE sha256:HEX [NAME])",
                        at(),
                        other.unwrap_or("")
                    ))
                }
            };
            let hash = parts
                .next()
                .and_then(|h| h.strip_prefix("sha256:"))
                .and_then(unhex)
                .ok_or_else(|| {
                    format!(
                        "{}: expected sha256: and 64 hex digits after the scope (tokens are \
                         stored hashed; `lovage server --hash-token` prints the line)",
                        at()
                    )
                })?;
            let name = parts.next().unwrap_or("token").to_owned();
            entries.push(TokenEntry { hash, scope, name });
        }
        if entries.is_empty() {
            return Err(format!("{origin}: no tokens in the file"));
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The scope and name of `token`, if it is one of ours.
    pub fn check(&self, token: &str) -> Option<(Scope, &str)> {
        let h: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compared hash to hash: equal-length digests, so timing reveals nothing of the token.
        self.entries
            .iter()
            .find(|e| e.hash == h)
            .map(|e| (e.scope, e.name.as_str()))
    }
}

/// Who made a request, as the middleware found it; handlers read it from the extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What it may do.
    pub scope: Scope,
    /// The token's name from the token file (`anonymous` when auth is off).
    pub name: String,
}

/// The credential a request carries and whether it came from the cookie.
fn credential(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some((t.trim().to_owned(), false));
        }
    }
    cookie(headers, COOKIE).map(|t| (t, true))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn is_mutation(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The cross-site check for a cookie-carried mutation.
fn csrf_ok(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get(CSRF_HEADER).is_none() {
        return Err(ApiError::forbidden(
            "a mutation authenticated by the cookie must send the X-Lovage-Csrf header",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(ApiError::forbidden(format!(
                "cross-origin request refused: Origin {origin} is not this server ({host})"
            )));
        }
    }
    Ok(())
}

/// Checks the caller of every API request: 401 without a valid credential, 403 when a read
/// token asks for a mutation or a cookie-carried mutation fails the CSRF check.
pub async fn require(State(state): State<ServerState>, mut req: Request, next: Next) -> Response {
    // The event poller and the chart sampler run from the first request on.
    state.hub.ensure_started(&state.app);
    let peer = peer(req.extensions());
    match authorize_from(&state, req.method(), req.headers(), peer) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The caller of a request from `peer`: the user a trusted proxy names, else by token.
pub fn authorize_from(
    state: &ServerState,
    method: &Method,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    if let Some(proxy) = &state.proxy {
        if let Some(caller) = proxy.caller(peer, method, headers)? {
            return Ok(caller);
        }
    }
    authorize(&state.auth, method, headers)
}

/// The caller of a request under `auth`, or why it is refused.
pub fn authorize(auth: &Auth, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let tokens = match auth {
        Auth::Open => {
            return Ok(Caller {
                scope: Scope::Admin,
                name: "anonymous".into(),
            })
        }
        Auth::Tokens(t) => t,
    };
    let Some((token, from_cookie)) = credential(headers) else {
        return Err(ApiError::unauthorized(
            "no credential: send Authorization: Bearer TOKEN, or log in at /login",
        ));
    };
    let Some((scope, name)) = tokens.check(&token) else {
        return Err(ApiError::unauthorized("the token is not valid"));
    };
    if is_mutation(method) {
        if scope < Scope::Admin {
            return Err(ApiError::forbidden(format!(
                "token {name:?} has scope read; this needs admin"
            )));
        }
        if from_cookie {
            csrf_ok(headers)?;
        }
    }
    Ok(Caller {
        scope,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let text = format!(
            "# ops\nread sha256:{} viewer\nadmin sha256:{}\n",
            hash_token("r-secret"),
            hash_token("a-secret")
        );
        Tokens::parse(&text, "tokens").unwrap()
    }

    #[test]
    fn a_trusted_proxy_names_the_user_and_others_are_ignored() {
        let p = ProxyAuth::new(
            "X-Forwarded-User",
            vec!["127.0.0.1".parse().unwrap()],
            vec!["alice".into()],
        )
        .unwrap();
        let local: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let mapped: Option<IpAddr> = Some("::ffff:127.0.0.1".parse().unwrap());
        let far: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        let mut h = HeaderMap::new();
        assert!(
            p.caller(local, &Method::GET, &h).unwrap().is_none(),
            "no header"
        );
        h.insert("x-forwarded-user", "bob".parse().unwrap());
        let bob = p.caller(local, &Method::GET, &h).unwrap().unwrap();
        assert_eq!((bob.scope, bob.name.as_str()), (Scope::Read, "bob"));
        assert!(
            p.caller(mapped, &Method::GET, &h).unwrap().is_some(),
            "IPv4-mapped"
        );
        assert!(
            p.caller(far, &Method::GET, &h).unwrap().is_none(),
            "untrusted peer"
        );
        assert!(
            p.caller(None, &Method::GET, &h).unwrap().is_none(),
            "no peer known"
        );
        assert_eq!(
            p.caller(local, &Method::POST, &h).unwrap_err().status(),
            403
        );
        h.insert("x-forwarded-user", "alice".parse().unwrap());
        assert_eq!(
            p.caller(local, &Method::POST, &h).unwrap_err().status(),
            403,
            "a mutation needs the CSRF header"
        );
        h.insert(CSRF_HEADER, "1".parse().unwrap());
        let alice = p.caller(local, &Method::POST, &h).unwrap().unwrap();
        assert_eq!(alice.scope, Scope::Admin);
        h.insert("x-forwarded-user", "".parse().unwrap());
        assert_eq!(p.caller(local, &Method::GET, &h).unwrap_err().status(), 401);
        assert!(ProxyAuth::new("bad header", vec![], vec![]).is_err());
        assert!(ProxyAuth::new("X-User", vec![], vec![]).is_err());
    }

    #[test]
    fn tokens_are_checked_by_hash() {
        let t = tokens();
        assert_eq!(t.check("r-secret"), Some((Scope::Read, "viewer")));
        assert_eq!(t.check("a-secret"), Some((Scope::Admin, "token")));
        assert_eq!(t.check("other"), None);
    }

    #[test]
    fn a_bad_token_file_names_the_line() {
        let e = Tokens::parse("read sha256:abc\n", "f").unwrap_err();
        assert!(e.starts_with("f:1:"), "{e}");
        let e = Tokens::parse("\nwrite sha256:abc\n", "f").unwrap_err();
        assert!(e.contains("f:2") && e.contains("write"), "{e}");
        assert!(Tokens::parse("# nothing\n", "f").is_err());
    }

    #[test]
    fn mutations_need_admin_and_cookie_mutations_need_the_csrf_header() {
        let auth = Auth::Tokens(Arc::new(tokens()));
        let mut h = HeaderMap::new();
        let e = authorize(&auth, &Method::GET, &h).unwrap_err();
        assert_eq!(e.status(), 401);
        h.insert(header::AUTHORIZATION, "Bearer r-secret".parse().unwrap());
        assert!(authorize(&auth, &Method::GET, &h).is_ok());
        assert_eq!(
            authorize(&auth, &Method::POST, &h).unwrap_err().status(),
            403
        );
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            "a=b; lovage_token=a-secret".parse().unwrap(),
        );
        c.insert(header::HOST, "127.0.0.1:5555".parse().unwrap());
        assert!(authorize(&auth, &Method::GET, &c).is_ok());
        assert_eq!(
            authorize(&auth, &Method::POST, &c).unwrap_err().status(),
            403
        );
        c.insert(CSRF_HEADER, "1".parse().unwrap());
        assert!(authorize(&auth, &Method::POST, &c).is_ok());
        c.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            authorize(&auth, &Method::POST, &c).unwrap_err().status(),
            403
        );
        c.insert(header::ORIGIN, "http://127.0.0.1:5555".parse().unwrap());
        assert!(authorize(&auth, &Method::POST, &c).is_ok());
    }
}
