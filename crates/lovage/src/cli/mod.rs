//! Command-line parsing and dispatch; each subcommand lives in its own module.

mod bench_pool;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lovage: work distribution in one binary — thread and process pools, task queues, workflows.
#[derive(Debug, Parser)]
#[command(name = "lovage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure lovage on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// List the tasks this binary has registered.
    Tasks {
        /// Print one JSON array instead of a list.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Thread pool and process pool: no-op throughput (vs rayon) and the seeds' CPU workloads.
    Pool(bench_pool::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(BenchCommand::Pool(args)) => bench_pool::run(args),
        Command::Tasks { json } => {
            let names = lovage::Registry::global().names();
            if json {
                println!("{}", serde_json::to_string(&names).expect("names encode"));
            } else {
                for n in names {
                    println!("{n}");
                }
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovage: {e:#}");
            ExitCode::FAILURE
        }
    }
}
