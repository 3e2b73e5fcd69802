//! lovage's own options in a Redis URL's query (`?prefix=name&eviction=warn&durable=1`); the
//! rest of the URL, other query pairs included, goes to the redis client as it is.

use crate::BrokerError;

/// What to do when the server may evict keys (`maxmemory-policy` other than `noeviction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Eviction {
    /// Refuse to open (the default): an evicted key loses work silently.
    Refuse,
    /// Open anyway and log a warning (`?eviction=warn`).
    Warn,
}

/// The options lovage reads from a Redis URL.
#[derive(Debug)]
pub(super) struct UrlOptions {
    /// The URL for the redis client: lovage's own query pairs removed, the fragment kept.
    pub(super) client_url: String,
    /// The key prefix (`lovage` unless `?prefix=` says otherwise).
    pub(super) prefix: String,
    pub(super) eviction: Eviction,
    /// `?durable=1`: refuse a server that does not fsync every write, and wait for replicas
    /// after each send.
    pub(super) durable: bool,
    /// `?task_index=1`: keep the task index `P:ix` (one ZADD per enqueued chunk), which
    /// listing tasks needs; off by default, as it costs Redis's enqueue about a quarter.
    pub(super) task_index: bool,
}

impl UrlOptions {
    /// Reads `url`; `location` (the URL without its password) names it in errors.
    pub(super) fn parse(url: &str, location: &str) -> Result<Self, BrokerError> {
        let bad = |reason: String| BrokerError::BadUrl {
            url: location.to_owned(),
            reason,
        };
        // `#insecure` (rediss:// with a self-signed certificate) belongs to the client URL.
        let (url, fragment) = match url.split_once('#') {
            Some((u, f)) => (u, format!("#{f}")),
            None => (url, String::new()),
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut options = UrlOptions {
            client_url: String::new(),
            prefix: "lovage".to_owned(),
            eviction: Eviction::Refuse,
            durable: false,
            task_index: false,
        };
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "prefix" if !value.is_empty() => options.prefix = value.to_owned(),
                "prefix" => {}
                "eviction" => {
                    options.eviction = match value {
                        "refuse" => Eviction::Refuse,
                        "warn" => Eviction::Warn,
                        other => {
                            return Err(bad(format!(
                                "eviction={other:?}: expected `refuse` (the default) or `warn`"
                            )))
                        }
                    }
                }
                "durable" => {
                    options.durable = match value {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" => false,
                        other => {
                            return Err(bad(format!("durable={other:?}: expected 1 or 0")));
                        }
                    }
                }
                "task_index" => {
                    options.task_index = match value {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" => false,
                        other => {
                            return Err(bad(format!("task_index={other:?}: expected 1 or 0")));
                        }
                    }
                }
                _ => passed.push(pair),
            }
        }
        options.client_url = if passed.is_empty() {
            format!("{base}{fragment}")
        } else {
            format!("{base}?{}{fragment}", passed.join("&"))
        };
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lovage_options_and_passes_the_rest_on() {
        let o = UrlOptions::parse(
            "redis://h:1/0?prefix=p&eviction=warn&protocol=resp3&durable=1#insecure",
            "x",
        )
        .unwrap();
        assert_eq!(o.prefix, "p");
        assert_eq!(o.eviction, Eviction::Warn);
        assert!(o.durable);
        assert_eq!(o.client_url, "redis://h:1/0?protocol=resp3#insecure");
        let o = UrlOptions::parse("redis://h:1/0", "x").unwrap();
        assert_eq!(
            (o.prefix.as_str(), o.eviction, o.durable),
            ("lovage", Eviction::Refuse, false)
        );
        assert_eq!(o.client_url, "redis://h:1/0");
        assert!(UrlOptions::parse("redis://h?eviction=maybe", "x").is_err());
    }
}
