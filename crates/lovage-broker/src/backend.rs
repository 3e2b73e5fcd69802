//! A backend opened from a URL: one value that is the broker, the result store and the
//! side traits of one storage, handed out through narrow accessors.

use std::sync::Arc;

use crate::{memory, Admin, Broker, BrokerError, Locks, Presence, RateLimits, Result, ResultStore};

/// Everything one storage provides: the [`Broker`] and its side traits plus the
/// [`ResultStore`]. Implemented for every type that implements them all.
pub trait Driver: Broker + Locks + RateLimits + Presence + Admin + ResultStore {}

impl<T: Broker + Locks + RateLimits + Presence + Admin + ResultStore + ?Sized> Driver for T {}

/// A broker and a result store opened from one URL. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Backend {
    driver: Arc<dyn Driver>,
    url: String,
}

impl Backend {
    /// Wraps a driver; `url` is what it was opened from (a password in it is not kept).
    pub fn new(driver: Arc<dyn Driver>, url: &str) -> Backend {
        Backend {
            driver,
            url: redact(url),
        }
    }

    /// The whole storage, every trait at once (conformance tests and tools that need it all).
    pub fn driver(&self) -> &dyn Driver {
        &*self.driver
    }

    /// Where tasks wait: a task's life.
    pub fn broker(&self) -> &dyn Broker {
        &*self.driver
    }

    /// Where results land.
    pub fn results(&self) -> &dyn ResultStore {
        &*self.driver
    }

    /// Named locks (the beat's leader).
    pub fn locks(&self) -> &dyn Locks {
        &*self.driver
    }

    /// Rate limits shared by every worker.
    pub fn rate_limits(&self) -> &dyn RateLimits {
        &*self.driver
    }

    /// Worker heartbeats.
    pub fn presence(&self) -> &dyn Presence {
        &*self.driver
    }

    /// Queue counts, purges, dead letters.
    pub fn admin(&self) -> &dyn Admin {
        &*self.driver
    }

    /// The URL it was opened from, without a password.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("url", &self.url).finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The broker URL used when none is given: `sqlite://lovage.db` in the current directory.
pub const DEFAULT_URL: &str = "sqlite://lovage.db";

/// Opens the backend named by `url`: `sqlite://PATH` (relative or absolute; `sqlite:///abs`
/// also works), `redis://[user:pass@]host:port/db[?prefix=name&eviction=warn&durable=1]` or
/// `rediss://` for TLS (features `redis`, `redis-tls`; Cluster and Sentinel are refused), or `memory://NAME` (shared by every `connect` in this
/// process with that name).
pub fn connect(url: &str) -> Result<Backend> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| BrokerError::BadUrl {
        url: redact(url),
        reason: "expected scheme://location, e.g. sqlite://lovage.db".into(),
    })?;
    let driver: Arc<dyn Driver> = match scheme {
        "memory" => memory::MemoryBackend::named(rest),
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            if rest.is_empty() {
                return Err(BrokerError::BadUrl {
                    url: url.to_owned(),
                    reason: "no file path after sqlite://".into(),
                });
            }
            Arc::new(crate::sqlite::SqliteBackend::open(rest)?)
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Arc::new(crate::redis_backend::RedisBackend::open(url)?),
        // `redis+sentinel://`, `rediss+cluster://`, `redis-cluster://`, `sentinel://`...
        s if s.starts_with("redis") || s.contains("sentinel") || s.contains("cluster") => {
            return Err(BrokerError::BadUrl {
                url: redact(url),
                reason: format!(
                    "{s}:// is not supported: lovage's Redis backend works with one standalone \
                     Redis server (redis:// or rediss://), not Redis Cluster or Sentinel \
                     discovery; point it at the primary (after a failover, a READONLY reply \
                     makes it reconnect to whatever the address leads to)"
                ),
            });
        }
        other => {
            let mut have = vec!["memory"];
            if cfg!(feature = "sqlite") {
                have.push("sqlite");
            }
            if cfg!(feature = "redis") {
                have.push("redis");
            }
            return Err(BrokerError::BadUrl {
                url: redact(url),
                reason: format!(
                    "unknown backend {other:?}; this build has: {}",
                    have.join(", ")
                ),
            });
        }
    };
    Ok(Backend::new(driver, url))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_is_not_kept() {
        assert_eq!(
            redact("redis://me:secret@host:6379/0"),
            "redis://me:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("sqlite://a@b.db"), "sqlite://a@b.db");
        assert_eq!(redact("sqlite:///tmp/x:y@z"), "sqlite:///tmp/x:y@z");
    }
}
