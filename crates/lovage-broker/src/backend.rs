//! A backend opened from a URL: one value that is the broker, the result store and the
//! side traits of one storage, handed out through narrow accessors.

use std::sync::Arc;

use lovage_core::TaskId;

use crate::ops::Event;
use crate::scope::ScopeFall;
use crate::shared::SharedState;
use crate::{
    memory, Admin, Broker, BrokerError, Control, Envelope, Events, Inspect, Lease, Locks, Presence,
    QueueOps, RateLimits, Result, ResultRecord, ResultStore,
};

/// Everything one storage provides: the [`Broker`] and its side traits plus the
/// [`ResultStore`], the operators' traits ([`crate::ops`]), and the steps that span them.
pub trait Driver:
    Broker
    + Locks
    + RateLimits
    + Presence
    + Admin
    + ResultStore
    + Inspect
    + QueueOps
    + Events
    + Control
    + SharedState
{
    /// Stores `records`, then completes `leases`: a worker's batch of finished tasks whose
    /// outcomes start nothing else. The records are stored before any lease is completed (a
    /// crash in between runs a task again rather than losing its outcome); a storage that can do
    /// both in one transaction or one round trip does (SQLite, Redis), which is most of what a
    /// finished task costs there. Repeating the call after a lost reply is harmless: the same
    /// record supersedes itself and a completed lease's token no longer matches.
    fn store_and_complete(&self, records: &[ResultRecord], leases: &[Lease]) -> Result<()> {
        self.store(records)?;
        self.complete(leases)
    }

    /// [`store_and_complete`](Driver::store_and_complete), then appends `events` to the event
    /// stream: a worker's finished batch and what it says about it. A storage that can do it all
    /// in the same transaction or script does, so events cost a finished task no round trip.
    fn store_complete_publish(
        &self,
        records: &[ResultRecord],
        leases: &[Lease],
        events: &[Event],
    ) -> Result<()> {
        self.store_and_complete(records, leases)?;
        if events.is_empty() {
            return Ok(());
        }
        self.publish(events)
    }

    /// Counts each envelope of `batch` as a member of `scope` and sends those it counted (as
    /// [`Broker::enqueue_once`] does), the count rising before the member is sent: a member
    /// already counted (by whoever spawned it first, who sends it) is skipped, unless `repair`
    /// is set and it is still pending, then it is put in the scope's open set again and sent
    /// again (a repeat of a send is dropped). For each envelope, true when it was sent. SQLite
    /// does it in one transaction and Redis in one script; the default is the step-by-step
    /// [`rise_and_send`](crate::scope::rise_and_send), where `repair` mends a rise that a
    /// crash left half done.
    fn enqueue_in_scope(
        &self,
        scope: TaskId,
        batch: &[Envelope],
        repair: bool,
    ) -> Result<Vec<bool>> {
        crate::scope::rise_and_send(self, scope, batch, repair)
    }

    /// [`store_complete_publish`](Driver::store_complete_publish) for a batch whose tasks also
    /// leave scopes: stores `records`, then lets each of `falls` fall out of its scope's count
    /// (idempotently: a member that fell before is left alone), then completes `leases` and
    /// appends `events`. A crash before the completions delivers the tasks again and their
    /// falls change nothing the second time. SQLite does it all in one transaction and Redis
    /// in one script.
    fn store_fall_complete(
        &self,
        records: &[ResultRecord],
        falls: &[ScopeFall],
        leases: &[Lease],
        events: &[Event],
    ) -> Result<()> {
        if falls.is_empty() {
            return self.store_complete_publish(records, leases, events);
        }
        self.store(records)?;
        for f in falls {
            crate::scope::fall_in(self, f)?;
        }
        self.store_complete_publish(&[], leases, events)
    }

    /// Lets each of `falls` fall out of its scope's count, idempotently (a member that fell
    /// before is left alone): for falls settled apart from their tasks' records, e.g. after a
    /// workflow's plan. The default is [`fall_in`](crate::scope::fall_in) for each; SQLite
    /// does them in one transaction, with its count of the open members.
    fn scope_fall(&self, falls: &[ScopeFall]) -> Result<()> {
        for f in falls {
            crate::scope::fall_in(self, f)?;
        }
        Ok(())
    }

    /// How many members of `scope` have risen and not yet fallen: the scope's join is done
    /// at 0. The default counts the scope's `open` dict; SQLite keeps the number itself.
    fn scope_open(&self, scope: TaskId) -> Result<u64> {
        self.dict_len(&crate::scope::dict_open(scope))
    }

    /// Forgets what `scope` counted, once its join has read the report.
    fn scope_forget(&self, scope: TaskId) -> Result<()> {
        self.dict_clear(&crate::scope::dict_all(scope))?;
        self.dict_clear(&crate::scope::dict_open(scope))
    }

    /// [`store_fall_complete`](Driver::store_fall_complete) for a batch whose tasks also held
    /// back children spawned into scopes: the children rise and are sent first (as
    /// [`enqueue_in_scope`](Driver::enqueue_in_scope)), so a scope never looks finished between
    /// a parent's fall and its children's rise. SQLite does it all in one transaction; the
    /// default sends the children, then settles.
    fn spawn_store_fall_complete(
        &self,
        spawns: &[crate::ScopeSpawn],
        records: &[ResultRecord],
        falls: &[ScopeFall],
        leases: &[Lease],
        events: &[Event],
    ) -> Result<()> {
        for sp in spawns {
            self.enqueue_in_scope(sp.scope, &sp.children, sp.repair)?;
        }
        self.store_fall_complete(records, falls, leases, events)
    }
}

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

    /// The task index and counts by state.
    pub fn inspect(&self) -> &dyn Inspect {
        &*self.driver
    }

    /// Pausing, resuming and peeking into queues.
    pub fn queue_ops(&self) -> &dyn QueueOps {
        &*self.driver
    }

    /// The bounded event stream.
    pub fn events(&self) -> &dyn Events {
        &*self.driver
    }

    /// The per-worker control mailbox.
    pub fn control(&self) -> &dyn Control {
        &*self.driver
    }

    /// Shared dicts and lists ([`crate::shared`]).
    pub fn shared(&self) -> &dyn SharedState {
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
///
/// Every backend takes `dead_letters=N` in the query (`sqlite://lovage.db?dead_letters=500`):
/// the dead letters it keeps, [`DEAD_LETTERS_KEPT`](crate::DEAD_LETTERS_KEPT) by default. The
/// cap is applied by whoever writes a dead letter, so give every process the same one.
pub fn connect(url: &str) -> Result<Backend> {
    let (stripped, kept) = take_param(url, "dead_letters");
    let kept = match kept {
        None => crate::DEAD_LETTERS_KEPT,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(BrokerError::BadUrl {
                    url: redact(url),
                    reason: format!("dead_letters={n:?}: expected a whole number above 0"),
                })
            }
        },
    };
    let driver = open_driver(&stripped, kept)?;
    Ok(Backend::new(driver, url))
}

/// The driver for `url` (without `dead_letters`), keeping `kept` dead letters.
fn open_driver(url: &str, kept: usize) -> Result<Arc<dyn Driver>> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| BrokerError::BadUrl {
        url: redact(url),
        reason: "expected scheme://location, e.g. sqlite://lovage.db".into(),
    })?;
    let driver: Arc<dyn Driver> = match scheme {
        "memory" => {
            let b = memory::MemoryBackend::named(rest);
            b.keep_dead_letters(kept);
            b
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            if rest.is_empty() {
                return Err(BrokerError::BadUrl {
                    url: url.to_owned(),
                    reason: "no file path after sqlite://".into(),
                });
            }
            let b = crate::sqlite::SqliteBackend::open(rest)?;
            b.keep_dead_letters(kept);
            Arc::new(b)
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let b = crate::redis_backend::RedisBackend::open(url)?;
            b.keep_dead_letters(kept);
            Arc::new(b)
        }
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
    Ok(driver)
}

/// `url` without the query parameter `key`, and its value if it was there (the last one).
fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    // A fragment (`#insecure`) stays at the end.
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut value = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if k == key => value = Some(v.to_owned()),
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, value)
}

#[cfg(test)]
mod tests {
    use super::{redact, take_param};

    #[test]
    fn the_dead_letter_cap_is_taken_out_of_the_url() {
        let take = |u| take_param(u, "dead_letters");
        assert_eq!(take("sqlite://a.db"), ("sqlite://a.db".into(), None));
        assert_eq!(
            take("sqlite://a.db?dead_letters=5"),
            ("sqlite://a.db".into(), Some("5".into()))
        );
        assert_eq!(
            take("redis://h/0?dead_letters=5&prefix=p#insecure"),
            ("redis://h/0?prefix=p#insecure".into(), Some("5".into()))
        );
        assert_eq!(
            take("redis://h/0?prefix=p&dead_letters=7"),
            ("redis://h/0?prefix=p".into(), Some("7".into()))
        );
    }

    #[test]
    fn a_bad_dead_letter_cap_is_refused() {
        for bad in ["memory://x?dead_letters=0", "memory://x?dead_letters=many"] {
            let err = super::connect(bad).expect_err("refused");
            assert!(err.to_string().contains("dead_letters"), "{err}");
        }
    }

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
