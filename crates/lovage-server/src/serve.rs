//! Running the router on a socket until SIGTERM or SIGINT, for `lovage server`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use lovage_broker::App;

use crate::auth::{Auth, ProxyAuth, Tokens};
use crate::{router, ServerState};

/// What `lovage server` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker URL.
    pub broker: String,
    /// Where to listen.
    pub bind: SocketAddr,
    /// The token file (`SCOPE sha256:HEX [NAME]` a line).
    pub token_file: Option<PathBuf>,
    /// Serve without tokens even on a non-loopback address.
    pub insecure_no_auth: bool,
    /// Serve `/metrics` without a token.
    pub open_metrics: bool,
    /// Per-worker series in `/metrics`.
    pub metrics_per_worker: bool,
    /// Sign in the user a reverse proxy names in this header (`--trust-user-header`).
    pub trust_user_header: Option<String>,
    /// Peers whose user header is believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<IpAddr>,
    /// Proxy users with scope admin (`--proxy-admins`); the others get read.
    pub proxy_admins: Vec<String>,
}

/// A bound server, not yet serving: [`Server::local_addr`] tells the port when it was 0.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    state: ServerState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .finish()
    }
}

impl Server {
    /// Opens the broker, reads the tokens and binds. Refuses a non-loopback address without
    /// tokens unless `insecure_no_auth` or a trusted proxy signs users in: the API can send
    /// and revoke tasks.
    pub fn bind(config: &Config) -> Result<Server, String> {
        let proxy = config
            .trust_user_header
            .as_deref()
            .map(|h| {
                ProxyAuth::new(
                    h,
                    config.trusted_proxies.clone(),
                    config.proxy_admins.clone(),
                )
            })
            .transpose()?;
        let auth = match (&config.token_file, config.insecure_no_auth) {
            (Some(path), _) => Auth::Tokens(Arc::new(Tokens::load(path)?)),
            (None, true) => Auth::Open,
            // The proxy signs people in; with no token file, no token is accepted, so a
            // request that goes around the proxy gets 401 even on a loopback address.
            (None, false) if proxy.is_some() => Auth::Tokens(Arc::new(Tokens::default())),
            (None, false) if config.bind.ip().is_loopback() => Auth::Open,
            (None, false) => {
                return Err(format!(
                    "refusing to listen on {} without tokens: anyone who can reach it could send \
                     and revoke tasks; give --token-file F, bind to 127.0.0.1, sign users in \
                     through a proxy with --trust-user-header, or pass --insecure-no-auth",
                    config.bind
                ))
            }
        };
        let app = App::connect(&config.broker).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lovage-server")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the async runtime: {e}"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.bind))
            .map_err(|e| format!("binding {}: {e}", config.bind))?;
        Ok(Server {
            runtime,
            listener,
            state: ServerState::new(app, auth)
                .open_metrics(config.open_metrics)
                .metrics_per_worker(config.metrics_per_worker)
                .trust_proxy(proxy),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.listener.local_addr().map_err(|e| e.to_string())
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(self) -> Result<(), String> {
        let Server {
            runtime,
            listener,
            state,
        } = self;
        runtime.block_on(async move {
            // With each connection's peer address: a proxy's user header is believed only from
            // a trusted peer.
            axum::serve(
                listener,
                router(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("serving: {e}"))
        })
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
