//! Helpers shared by the worker's integration tests.

use lovage_core::TaskId;

/// A key prefix of this test's own on the machine's Redis (`REDIS_URL`); its keys are deleted
/// when it is dropped, whether the test passed or not.
pub struct RedisPrefix {
    base: String,
    prefix: String,
}

impl RedisPrefix {
    pub fn new() -> RedisPrefix {
        RedisPrefix {
            base: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("lovage-test-{}", TaskId::new()),
        }
    }

    /// The broker URL for this prefix.
    pub fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.base.as_str()) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}
