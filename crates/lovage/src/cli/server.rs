//! `lovage server`: the HTTP API and dashboard over a broker (crate `lovage-server`).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on; a non-loopback one needs --token-file (or --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1:5555")]
    bind: SocketAddr,
    /// Tokens, one a line: `read|admin sha256:HEX [NAME]` (see --hash-token).
    #[arg(long, env = "LOVAGE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve without tokens on any address: anyone who reaches it can send and revoke tasks.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Serve /metrics without a token (for a Prometheus scraper on a trusted network).
    #[arg(long)]
    open_metrics: bool,
    /// Add per-worker series to /metrics (removed when a worker goes away).
    #[arg(long)]
    metrics_per_worker: bool,
    /// Sign in the user a reverse proxy names in this header (e.g. X-Forwarded-User from
    /// oauth2-proxy) on requests from a --trusted-proxy address: scope read, admin for
    /// --proxy-admins. Requests without the header use tokens as before; with no --token-file,
    /// none is accepted (and a non-loopback bind is allowed).
    #[arg(long, value_name = "NAME")]
    trust_user_header: Option<String>,
    /// Peers whose --trust-user-header is believed, comma-separated.
    #[arg(
        long,
        value_name = "IP[,IP]",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    trusted_proxy: Vec<IpAddr>,
    /// Users signed in by the proxy who get scope admin, comma-separated.
    #[arg(long, value_name = "USER[,USER]", value_delimiter = ',')]
    proxy_admins: Vec<String>,
    /// Read a token on standard input, print its token-file line (`admin sha256:...`) and exit.
    #[arg(long)]
    hash_token: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(a: ServerArgs) -> Result<(), Exit> {
    if a.hash_token {
        let token = std::io::read_to_string(std::io::stdin())
            .map_err(|e| Exit::failed(format!("reading the token: {e}")))?;
        if token.trim().is_empty() {
            return Err(Exit::usage("--hash-token: no token on standard input"));
        }
        println!("admin sha256:{}", lovage_server::auth::hash_token(&token));
        return Ok(());
    }
    let server = lovage_server::Server::bind(&lovage_server::Config {
        broker: a.broker.broker.clone(),
        bind: a.bind,
        token_file: a.token_file,
        insecure_no_auth: a.insecure_no_auth,
        open_metrics: a.open_metrics,
        metrics_per_worker: a.metrics_per_worker,
        trust_user_header: a.trust_user_header,
        trusted_proxies: a.trusted_proxy,
        proxy_admins: a.proxy_admins,
    })
    .map_err(Exit::failed)?;
    let addr = server.local_addr().map_err(Exit::failed)?;
    // Tests and scripts read the port from this line when they bind port 0.
    println!("lovage server listening on http://{addr}/");
    let _ = std::io::stdout().flush();
    server.run().map_err(Exit::failed)
}
