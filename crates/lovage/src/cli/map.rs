//! `lovage map`: one shell command per line, fanned out over the workers (GNU parallel on a
//! cluster), outputs printed in input order, failures summed up at the end.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lovage::{Codec, Signature};

use super::outcome::{outcome, Outcome};
use super::output::{self, MapItem};
use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// File with one shell command per line, or - for standard input. Empty lines and lines
    /// starting with # are skipped.
    file: String,
    /// Queue to send to.
    #[arg(long, short)]
    queue: Option<String>,
    /// Kill a command after this long.
    #[arg(long, value_parser = lovage::parse_duration)]
    timeout: Option<Duration>,
    /// Do not print the commands' standard output (as they finish; `--json` keeps it).
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object at the end: {"commands", "succeeded", "failed", "results": [{"line",
    /// "command", "id", "state", "exit_code", "stdout", "stderr", "truncated", "error"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(a: MapArgs) -> Result<(), Exit> {
    let reader: Box<dyn BufRead> = if a.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.file)
            .map_err(|e| Exit::usage(format!("cannot read {}: {e}", a.file)))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut commands = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Exit::usage(format!("reading {}: {e}", a.file)))?;
        let cmd = line.trim();
        if !cmd.is_empty() && !cmd.starts_with('#') {
            commands.push((n + 1, cmd.to_owned()));
        }
    }
    let app = a.broker.app()?;
    let timeout = a.timeout.map(|d| d.as_secs_f64());
    let sigs = commands.iter().map(|(_, cmd)| {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), cmd.clone()];
        let mut sig = Signature::new(
            "lovage.shell",
            &(argv, None::<String>, None::<()>, timeout),
            Codec::Json,
        )
        .expect("shell arguments encode");
        sig.options.queue = a.queue.clone();
        sig
    });
    let ids = app.send_batch(sigs).context("sending the commands")?;
    let bar = ProgressBar::new(ids.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} commands ({elapsed}, {eta} left)")
            .expect("valid template"),
    );
    let out = output::select(a.json);
    let mut items = Vec::with_capacity(ids.len());
    for ((line, cmd), id) in commands.into_iter().zip(&ids) {
        let rec = app
            .wait_record(*id, Duration::from_secs(365 * 24 * 3600))
            .context("waiting for a result")?;
        bar.inc(1);
        let item = MapItem {
            line,
            command: cmd,
            id: *id,
            outcome: outcome(rec.as_ref()),
        };
        if !a.quiet {
            bar.suspend(|| out.map_item(&item));
        }
        items.push(item);
    }
    bar.finish_and_clear();
    out.map_summary(&items);
    let failed = items
        .iter()
        .filter(|i| !matches!(i.outcome, Outcome::Done(_)))
        .count();
    if failed == 0 {
        Ok(())
    } else {
        Err(Exit::code(1, format!("{failed} command(s) failed")))
    }
}
