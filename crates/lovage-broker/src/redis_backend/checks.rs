//! What the backend checks of the server when it opens: a standalone server (not a Cluster
//! node), an eviction policy that never drops keys, and, for `?durable=1`, an append-only
//! file synced on every write.

use std::collections::HashMap;

use super::options::Eviction;
use super::RedisBackend;
use crate::{BrokerError, Result};

impl RedisBackend {
    fn refuse(&self, why: String) -> BrokerError {
        BrokerError::Open {
            backend: "redis",
            location: self.location.clone(),
            source: why.into(),
        }
    }

    /// One `INFO` section as `field → value`.
    fn info(&self, section: &'static str) -> Result<HashMap<String, String>> {
        let text: String = self.with_conn("info", |c| redis::cmd("INFO").arg(section).query(c))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// A `CONFIG GET` value, or None where the server does not answer it (hosted services
    /// often disable or rename CONFIG).
    fn config(&self, name: &'static str) -> Option<String> {
        self.with_conn("config get", |c| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query::<HashMap<String, String>>(c)
        })
        .ok()
        .and_then(|mut m| m.remove(name))
    }

    /// Refuses a Redis Cluster node: the scripts and transactions touch keys of many hash
    /// slots, which a cluster rejects (CROSSSLOT) or, through a proxy, splits.
    pub(super) fn check_not_cluster(&self) -> Result<()> {
        let info = self.info("cluster")?;
        if info.get("cluster_enabled").map(String::as_str) == Some("1") {
            return Err(self.refuse(
                "this server is a Redis Cluster node (cluster_enabled:1); lovage's Redis backend \
                 does not support Redis Cluster (its scripts and transactions span many hash \
                 slots). Use a standalone Redis server (a primary, with replicas if you like)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Refuses (or with `?eviction=warn`, warns about) a server that may evict keys.
    pub(super) fn check_eviction(&self, eviction: Eviction) -> Result<()> {
        let policy = match self.config("maxmemory-policy") {
            Some(p) => Some(p),
            None => self
                .info("memory")
                .ok()
                .and_then(|mut m| m.remove("maxmemory_policy")),
        };
        let Some(policy) = policy else {
            tracing::warn!(
                location = %self.location,
                "cannot read the Redis server's maxmemory-policy (neither CONFIG GET nor INFO \
                 memory answered); make sure it is `noeviction`, or evicted keys lose tasks, \
                 chord counters and chain steps silently"
            );
            return Ok(());
        };
        if policy == "noeviction" {
            return Ok(());
        }
        let why = format!(
            "its maxmemory-policy is {policy:?}, not \"noeviction\": when memory runs out Redis \
             evicts keys{}, and lovage loses work silently (a chord's join counter or a \
             chain's stored tail with a TTL evicted: the chord never fires, the chain stops{}). \
             Set `maxmemory-policy noeviction` on the server (sends then fail with OOM instead), \
             or add `eviction=warn` to the URL's query to open anyway",
            if policy.starts_with("allkeys") {
                " of any kind"
            } else {
                " with a time to live"
            },
            if policy.starts_with("allkeys") {
                "; and the hash of waiting tasks itself can go"
            } else {
                ""
            },
        );
        match eviction {
            Eviction::Refuse => Err(self.refuse(why)),
            Eviction::Warn => {
                tracing::warn!(location = %self.location, "opening anyway (eviction=warn): {why}");
                Ok(())
            }
        }
    }

    /// For `?durable=1`: refuses a server that does not append every write to its AOF and
    /// fsync it before replying; returns how many replicas a send then waits for.
    pub(super) fn check_durable(&self) -> Result<usize> {
        let appendonly = self.config("appendonly");
        let appendfsync = self.config("appendfsync");
        match (appendonly.as_deref(), appendfsync.as_deref()) {
            (Some("yes"), Some("always")) => {}
            (Some(a), Some(f)) => {
                return Err(self.refuse(format!(
                    "durable=1 needs `appendonly yes` and `appendfsync always` (every write \
                     fsynced before Redis replies); this server has appendonly {a} and \
                     appendfsync {f}. Change them, or drop durable=1"
                )))
            }
            _ => {
                return Err(self.refuse(
                    "durable=1 needs to check `appendonly yes` and `appendfsync always`, but \
                     the server does not answer CONFIG GET (disabled or renamed?); drop \
                     durable=1 and check its persistence yourself"
                        .into(),
                ))
            }
        }
        let replicas = self
            .info("replication")?
            .get("connected_slaves")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(replicas)
    }
}
