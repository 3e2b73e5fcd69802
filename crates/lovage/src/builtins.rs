//! Tasks every lovage binary has, so the CLI is useful without writing Rust.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{kinds, TaskError};

/// Does nothing: the unit of throughput benchmarks.
#[crate::task(name = "lovage.noop")]
pub fn noop() {}

/// Sleeps for `seconds` (fractional allowed) and returns them.
#[crate::task(name = "lovage.sleep")]
pub fn sleep(seconds: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
    seconds
}

/// Returns its argument unchanged.
#[crate::task(name = "lovage.echo")]
pub fn echo(value: serde_json::Value) -> serde_json::Value {
    value
}

/// Runs the registered task `task` once per argument list in `args`, in this worker, one
/// after another; returns the results in order. The body of `chunks` (Celery's
/// `task.chunks(items, n)`): fewer, bigger messages for many small calls.
#[crate::task(name = "lovage.starmap")]
pub fn starmap(
    task: String,
    args: Vec<serde_json::Value>,
) -> Result<Vec<serde_json::Value>, TaskError> {
    let entry = crate::Registry::global().get(&task)?;
    args.iter()
        .map(|a| {
            let bytes =
                serde_json::to_vec(a).map_err(|e| TaskError::new(kinds::CODEC, e.to_string()))?;
            let out = match entry.run {
                crate::TaskFn::Blocking(f) => f(&bytes, crate::Codec::Json)?,
                crate::TaskFn::Async(f) => crate::block_on(f(bytes, crate::Codec::Json))?,
            };
            serde_json::from_slice(&out).map_err(|e| TaskError::new(kinds::CODEC, e.to_string()))
        })
        .collect()
}

/// Adds up a list of numbers (a chord's usual callback).
#[crate::task(name = "lovage.sum")]
pub fn sum(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

/// Appends `value` as one line of JSON to the file at `path` (created if missing) and returns
/// the bytes written: a sink for a workflow's results (for example a chord's callback).
#[crate::task(name = "lovage.append_jsonl")]
pub fn append_jsonl(value: serde_json::Value, path: String) -> Result<u64, TaskError> {
    use std::io::Write;
    let mut line =
        serde_json::to_vec(&value).map_err(|e| TaskError::new(kinds::CODEC, e.to_string()))?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TaskError::from_error(&e).with_cause(format!("opening {path}")))?;
    // One write call with O_APPEND: lines from concurrent runs do not interleave.
    file.write_all(&line)
        .map_err(|e| TaskError::from_error(&e).with_cause(format!("writing {path}")))?;
    Ok(line.len() as u64)
}

/// Output kept per stream; the rest is cut and `truncated` is set.
pub const SHELL_OUTPUT_LIMIT: usize = 1 << 20;

/// What a `lovage.shell` run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShellOutput {
    /// The exit code (0 on success).
    pub exit_code: i32,
    /// Standard output, lossily decoded as UTF-8, cut at [`SHELL_OUTPUT_LIMIT`] bytes.
    pub stdout: String,
    /// Standard error, the same way.
    pub stderr: String,
    /// True if either stream was cut.
    pub truncated: bool,
}

/// Runs a program: `argv[0]` with the rest as arguments (no shell unless you ask for one:
/// `["sh", "-c", "..."]`), in `cwd`, with `env` added, killed after `timeout` seconds.
/// A non-zero exit is a FAILURE whose causes hold the exit code and the end of stderr.
#[crate::task(name = "lovage.shell")]
pub fn shell(
    argv: Vec<String>,
    cwd: Option<String>,
    env: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
) -> Result<ShellOutput, TaskError> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        TaskError::new("BadArguments", "argv is empty: give at least the program")
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &cwd {
        cmd.current_dir(dir);
    }
    if let Some(env) = &env {
        cmd.envs(env);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| TaskError::new("SpawnFailed", format!("cannot start {program:?}: {e}")))?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let read_out = std::thread::spawn(move || read_limited(out));
    let read_err = std::thread::spawn(move || read_limited(err));
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| TaskError::new("WaitFailed", e.to_string()))?
        {
            break Some(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, cut_out) = read_out.join().unwrap_or_default();
    let (stderr, cut_err) = read_err.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(TaskError::new(
            kinds::TIME_LIMIT_EXCEEDED,
            format!(
                "{program:?} ran longer than {}s and was killed",
                timeout.unwrap_or_default()
            ),
        ));
    };
    let exit_code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    let output = ShellOutput {
        exit_code,
        stdout,
        stderr,
        truncated: cut_out || cut_err,
    };
    if exit_code != 0 {
        let tail: String = output
            .stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(TaskError::new(
            "NonZeroExit",
            format!("{program:?} exited with code {exit_code}"),
        )
        .with_cause(format!("stderr: {}", tail.trim_end())));
    }
    Ok(output)
}

/// Reads a stream to its end, keeping the first [`SHELL_OUTPUT_LIMIT`] bytes.
fn read_limited(mut r: impl Read) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = SHELL_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_captures_output_and_fails_on_non_zero_exit() {
        let out = shell(
            vec!["sh".into(), "-c".into(), "echo out; echo err >&2".into()],
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
            (0, "out\n", "err\n")
        );
        let err = shell(
            vec!["sh".into(), "-c".into(), "echo why >&2; exit 3".into()],
            None,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind, "NonZeroExit");
        assert!(
            err.message.contains("code 3") && err.causes[0].contains("why"),
            "{err}"
        );
    }

    #[test]
    fn shell_honours_cwd_env_and_timeout() {
        let env = BTreeMap::from([("GREETING".to_owned(), "hej".to_owned())]);
        let out = shell(
            vec!["sh".into(), "-c".into(), "pwd; echo $GREETING".into()],
            Some("/".into()),
            Some(env),
            None,
        )
        .unwrap();
        assert_eq!(out.stdout, "/\nhej\n");
        let err = shell(vec!["sleep".into(), "30".into()], None, None, Some(0.2)).unwrap_err();
        assert_eq!(err.kind, kinds::TIME_LIMIT_EXCEEDED);
        let err = shell(vec![], None, None, None).unwrap_err();
        assert_eq!(err.kind, "BadArguments");
        let err = shell(vec!["/no/such/program".into()], None, None, None).unwrap_err();
        assert_eq!(err.kind, "SpawnFailed");
    }

    #[test]
    fn output_is_cut_at_the_limit() {
        let script = format!("head -c {} /dev/zero", SHELL_OUTPUT_LIMIT + 10);
        let out = shell(vec!["sh".into(), "-c".into(), script], None, None, None).unwrap();
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), SHELL_OUTPUT_LIMIT);
    }
}
