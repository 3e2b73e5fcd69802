//! A worker process that is this test binary started again (`harness = false` test binaries):
//! the parent starts it with [`WorkerRole::start`], which passes the settings in an
//! environment variable, and the child's `main` calls [`serve_worker_role`] first, which runs
//! the worker when the variable is set. The child is the same binary, so it knows the same
//! registered tasks (the built-in ones must be registered before: `lovage_collections::
//! register()`, `lovage_frame::register()`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use lovage_broker::connect;
use lovage_worker::{DataConfig, Worker, WorkerConfig};

use crate::Process;

/// A worker process's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerRole {
    /// The broker's URL.
    pub url: String,
    /// The worker's name (its results' references name it).
    pub name: String,
    /// The queues it serves (comma-separated; the worker's default when empty).
    pub queues: String,
    /// With the data plane on, the directory its spilled values go under.
    pub data_dir: Option<PathBuf>,
}

/// Separates the settings in the environment variable (none of them holds it).
const SEP: char = '|';

/// The data directory that stands for the worker's default one.
const DEFAULT_DIR: &str = "-";

impl WorkerRole {
    /// A worker named `name` on `url`, serving the default queue, no data plane.
    pub fn new(url: &str, name: &str) -> WorkerRole {
        WorkerRole {
            url: url.to_owned(),
            name: name.to_owned(),
            ..WorkerRole::default()
        }
    }

    /// Serving `queues` (comma-separated) instead.
    pub fn queues(mut self, queues: &str) -> WorkerRole {
        self.queues = queues.to_owned();
        self
    }

    /// With the data plane on (results of 64 KiB or more stay in the worker), spilling
    /// under `dir`.
    pub fn data_plane(mut self, dir: &Path) -> WorkerRole {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// With the data plane on, spilling where the worker chooses by default.
    pub fn data_plane_default(mut self) -> WorkerRole {
        self.data_dir = Some(PathBuf::from(DEFAULT_DIR));
        self
    }

    /// This binary started again as the worker (`var` set to the settings), its output on
    /// the test's, killed with -9 when dropped.
    pub fn start(&self, var: &str) -> Process {
        Process::this_binary(var, &self.encode(), Stdio::inherit())
    }

    fn encode(&self) -> String {
        let dir = self
            .data_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        ["worker", &self.url, &self.name, &self.queues, &dir].join(&SEP.to_string())
    }

    fn decode(text: &str) -> Option<WorkerRole> {
        match text.split(SEP).collect::<Vec<_>>()[..] {
            ["worker", url, name, queues, dir] => Some(WorkerRole {
                url: url.to_owned(),
                name: name.to_owned(),
                queues: queues.to_owned(),
                data_dir: (!dir.is_empty()).then(|| dir.into()),
            }),
            _ => None,
        }
    }

    /// Runs the worker (two slots) until it is stopped (SIGTERM) or killed.
    fn run(&self) {
        let mut config = WorkerConfig {
            concurrency: 2,
            name: self.name.clone(),
            ..WorkerConfig::default()
        };
        if !self.queues.is_empty() {
            config.queues = self.queues.split(',').map(str::to_owned).collect();
        }
        config.data = self.data_dir.as_ref().map(|dir| DataConfig {
            dir: (dir.as_os_str() != DEFAULT_DIR).then(|| dir.clone()),
            ..DataConfig::default()
        });
        let worker = Worker::new(connect(&self.url).unwrap(), config).unwrap();
        lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
        worker.run().unwrap();
    }
}

/// Serves the worker role when this process was started as one (`var` set by
/// [`WorkerRole::start`]); true when it did (then `main` returns).
///
/// # Panics
/// When `var` holds something else, or the worker cannot start.
pub fn serve_worker_role(var: &str) -> bool {
    let Ok(text) = std::env::var(var) else {
        return false;
    };
    let role = WorkerRole::decode(&text).unwrap_or_else(|| panic!("bad {var} {text:?}"));
    role.run();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_variable() {
        let plain = WorkerRole::new("redis://127.0.0.1:6379/0?prefix=p", "a");
        assert_eq!(WorkerRole::decode(&plain.encode()), Some(plain));
        let full = WorkerRole::new("sqlite:///tmp/x/b.db", "b")
            .queues("celery,frame-finish")
            .data_plane(Path::new("/tmp/data"));
        assert_eq!(WorkerRole::decode(&full.encode()), Some(full));
        assert_eq!(WorkerRole::decode("client|x"), None);
    }
}
