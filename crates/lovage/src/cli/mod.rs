//! Command-line parsing and dispatch; each group of subcommands lives in its own module, and
//! every result people compare goes through `output`.

mod beat;
mod bench_collections;
mod bench_flow;
#[cfg(feature = "frames")]
mod bench_frames;
#[cfg(feature = "frames")]
mod bench_frames_spill;
mod bench_graph;
mod bench_mp;
mod bench_pool;
mod bench_queue;
mod bench_rate;
#[cfg(feature = "server")]
mod bench_server;
mod client;
mod demo;
mod graph;
mod map;
mod ops;
mod outcome;
mod output;
mod procs;
#[cfg(feature = "server")]
mod server;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lovage::App;

/// lovage: work distribution in one binary — thread and process pools, a task queue with an
/// embedded broker, workers.
///
/// Start with `lovage demo`. A queue in three commands:
///   lovage worker &                                  # consume ./lovage.db
///   lovage submit lovage.shell '[["uname", "-a"]]'   # prints the task id
///   lovage result ID --wait                          # prints the output
#[derive(Debug, Parser)]
#[command(name = "lovage", version, about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The queue on this machine in one command: a temporary SQLite broker, two worker
    /// processes, the seeds' workloads sent through it, a table of results.
    Demo(demo::DemoArgs),
    /// Consume queues and run tasks until SIGTERM/SIGINT (a second signal requeues what runs).
    Worker(worker::WorkerArgs),
    /// Send periodic tasks from a schedule (interval and cron entries); one leader among
    /// several beats.
    Beat(beat::BeatArgs),
    /// Send a task: `lovage submit lovage.shell '[["echo", "hi"]]' --wait`.
    Submit(client::SubmitArgs),
    /// Show a task's state.
    Status(client::IdArgs),
    /// Print a task's result as JSON (exit 1 if it failed, 3 if not finished).
    Result(client::ResultArgs),
    /// Revoke a task: a waiting one never runs; a running one's result is discarded.
    Revoke(client::IdArgs),
    /// Remove every waiting task from a queue.
    Purge(client::PurgeArgs),
    /// Queue lengths: ready, scheduled (ETA or retry delay) and reserved by workers.
    Queues(client::ListArgs),
    /// Workers with a recent heartbeat.
    Workers(client::ListArgs),
    /// Ask live workers through their mailboxes: ping, stats, active, reserved, scheduled,
    /// registered, revoked, conf (`--destination w1,w2`, `--timeout 1s`).
    Inspect(ops::InspectArgs),
    /// Tell live workers to do something: revoke, rate_limit, time_limit, add_consumer,
    /// cancel_consumer, enable_events, disable_events, shutdown (each one is recorded as a
    /// control-issued event).
    Control(ops::ControlArgs),
    /// Print the broker's event stream (workers publish with `lovage worker -E`); --follow tails it.
    Events(ops::EventsArgs),
    /// Run a file of shell commands (one per line, or - for stdin) on the workers.
    Map(map::MapArgs),
    /// A task graph the workers resolve: its nodes by task and state (`--json`: every node).
    Graph(graph::GraphArgs),
    /// List the tasks this binary has registered.
    Tasks {
        /// Print one JSON array instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API, dashboard and metrics over the broker (default 127.0.0.1:5555).
    #[cfg(feature = "server")]
    Server(server::ServerArgs),
    /// Measure lovage on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Thread pool and process pool: no-op throughput (vs rayon) and the seeds' CPU workloads.
    Pool(bench_pool::Args),
    /// The queue end to end with worker processes: enqueue rate, throughput, latency.
    Queue(bench_queue::Args),
    /// Workflows: a chord of N members against N plain tasks, and a long chain.
    #[command(alias = "chord")]
    Flow(bench_flow::Args),
    /// A global rate limit across worker processes: the rate achieved against the limit.
    Rate(bench_rate::Args),
    /// `lovage server` under load: its memory at 10k and 1M tasks, API latency, event
    /// fan-out to SSE clients, worker throughput with events on and off.
    #[cfg(feature = "server")]
    Server(bench_server::Args),
    /// Delayed graphs: build cost per node, run cost per task, memory, on one local scheduler.
    Graph(bench_graph::Args),
    /// Bags and arrays: a billion-value array mean (beside a hand-written loop), a word count,
    /// a fold of ints.
    Collections(bench_collections::Args),
    /// lovage::mp between processes: Queue, Pipe, Lock, shared-array squares.
    Mp(bench_mp::Args),
    /// Data frames on Polars: group-by with few and many groups, the e-commerce mini project,
    /// each beside single-process Polars (needs the `frames` feature).
    #[cfg(feature = "frames")]
    Frames(bench_frames::Args),
}

/// The broker every queue command talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Broker URL: sqlite://PATH (one file, no server), redis://[user:pass@]host:port/db[?prefix=P]
    /// (many hosts; rediss:// for TLS; also &eviction=warn, &durable=1, see docs/guarantees.md)
    /// or memory://NAME (this process only); any of them takes ?dead_letters=N (the dead letters
    /// kept, 10000 by default).
    #[arg(long, short = 'b', env = "LOVAGE_BROKER", default_value = lovage::DEFAULT_URL, global = true)]
    broker: String,
}

impl BrokerArgs {
    /// Opens the broker, or fails with a message naming it.
    pub fn app(&self) -> Result<App, Exit> {
        App::connect(&self.broker).map_err(|e| Exit::failed(e.to_string()))
    }
}

/// How a command ends when it does not succeed: an exit code and a message for stderr.
#[derive(Debug)]
pub struct Exit {
    code: u8,
    message: String,
}

impl Exit {
    /// Bad input from the user: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Exit {
            code: 2,
            message: message.into(),
        }
    }

    /// The command ran and failed: exit 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Exit {
            code: 1,
            message: message.into(),
        }
    }

    /// Any other exit code.
    pub fn code(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Self {
        Exit::failed(format!("{e:#}"))
    }
}

fn init_logging(default: &str) {
    let level = std::env::var("LOVAGE_LOG").unwrap_or_else(|_| default.to_owned());
    let filter = match level.to_ascii_lowercase().as_str() {
        "off" => tracing::level_filters::LevelFilter::OFF,
        "error" => tracing::level_filters::LevelFilter::ERROR,
        "warn" => tracing::level_filters::LevelFilter::WARN,
        "debug" => tracing::level_filters::LevelFilter::DEBUG,
        "trace" => tracing::level_filters::LevelFilter::TRACE,
        _ => tracing::level_filters::LevelFilter::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        // A log line that cannot be written (stderr is a pipe whose reader went away) is
        // dropped. By default tracing-subscriber reports that with `eprintln!`, which panics
        // on the same closed stderr and kills the logging thread: a worker's signal thread
        // died that way and the worker no longer stopped on SIGTERM.
        .log_internal_errors(false)
        .with_target(false)
        .try_init();
}

/// Logs go to stderr; they carry ANSI colour codes only where a person reads them: stderr is a
/// terminal and `NO_COLOR` is unset or empty (<https://no-color.org>). A file or a pipe gets
/// plain text.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn is_server(_c: &Command) -> bool {
    #[cfg(feature = "server")]
    if matches!(_c, Command::Server(_)) {
        return true;
    }
    false
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        if matches!(cli.command, Command::Worker(_) | Command::Beat(_)) || is_server(&cli.command) {
            "info"
        } else {
            "warn"
        },
    );
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Beat(a) => beat::run(a),
        Command::Submit(a) => client::submit(a),
        Command::Status(a) => client::status(a),
        Command::Result(a) => client::result(a),
        Command::Revoke(a) => client::revoke(a),
        Command::Purge(a) => client::purge(a),
        Command::Queues(a) => client::queues(a),
        Command::Workers(a) => client::workers(a),
        Command::Map(a) => map::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Inspect(a) => ops::inspect(a),
        Command::Control(a) => ops::control(a),
        Command::Events(a) => ops::events(a),
        #[cfg(feature = "server")]
        Command::Server(a) => server::run(a),
        Command::Bench(BenchCommand::Pool(a)) => bench_pool::run(a).map_err(Exit::from),
        Command::Bench(BenchCommand::Queue(a)) => bench_queue::run(a),
        Command::Bench(BenchCommand::Flow(a)) => bench_flow::run(a),
        Command::Bench(BenchCommand::Rate(a)) => bench_rate::run(a),
        #[cfg(feature = "server")]
        Command::Bench(BenchCommand::Server(a)) => bench_server::run(a),
        Command::Bench(BenchCommand::Graph(a)) => bench_graph::run(a).map_err(Exit::from),
        Command::Bench(BenchCommand::Collections(a)) => {
            bench_collections::run(a).map_err(Exit::from)
        }
        Command::Bench(BenchCommand::Mp(a)) => bench_mp::run(a).map_err(Exit::from),
        #[cfg(feature = "frames")]
        Command::Bench(BenchCommand::Frames(a)) => bench_frames::run(a).map_err(Exit::from),
        Command::Tasks { json } => {
            output::select(json).tasks(&lovage::Registry::global().names());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovage: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
