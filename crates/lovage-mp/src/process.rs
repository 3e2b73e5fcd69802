//! `Process`: one registered task in a child process of its own (Python's
//! `multiprocessing.Process`), the current executable started again as the process pool's
//! children are.

// A child reports a failed task on stderr, which is its parent's: it has no other channel.
#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lovage_core::{Codec, Registry, Signature, TypedSignature};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sys::map::{inherited_fds, keep_across_exec, take_kept};

/// Marks a child started by [`Process::spawn`]; its value is the parent's pid.
const CHILD_ENV: &str = "LOVAGE_MP_CHILD";
/// The first bytes of the request a child reads on stdin.
const REQUEST_MAGIC: &[u8; 4] = b"LMP1";

/// The exit code of a child whose task returned an error.
pub const EXIT_TASK_FAILED: i32 = 1;
/// The exit code of a child whose task panicked (Rust's own for a panicking `main`).
pub const EXIT_PANIC: i32 = 101;
/// The exit code of a child that could not run its task (unknown task, bad request).
pub const EXIT_BAD_REQUEST: i32 = 70;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code: 0 for a task that returned `Ok`, [`EXIT_TASK_FAILED`] for
    /// `Err`, [`EXIT_PANIC`] for a panic.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    fn from_std(s: std::process::ExitStatus) -> ExitStatus {
        match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            (None, None) => ExitStatus::Code(-1),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A child process running one task.
///
/// The child dies with its parent (`PR_SET_PDEATHSIG`), so none outlives the program. Dropping
/// a `Process` neither waits for nor kills it; [`join`](Process::join) reaps it.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Children are forked by one long-lived thread: the kernel's parent-death signal fires when
/// the *thread* that forked exits, and a child must not die because a short-lived thread that
/// started it ended.
fn spawner() -> Result<&'static Mutex<mpsc::Sender<SpawnJob>>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    let spawned = std::thread::Builder::new()
        .name("lovage-mp-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
    match spawned {
        Ok(_) => Ok(SPAWNER.get_or_init(|| Mutex::new(tx))),
        Err(e) => Err(Error::io("starting the spawner thread", e)),
    }
}

impl Process {
    /// Runs `sig` (`task::s(args)`) in a new child. The arguments may hold shared objects
    /// (queues, locks, arrays…): the child reopens them.
    pub fn spawn<R: DeserializeOwned>(sig: TypedSignature<R>) -> Result<Process> {
        sig.check()?;
        Process::spawn_signature(sig.into_signature())
    }

    /// Runs an untyped signature in a new child.
    pub fn spawn_signature(sig: Signature) -> Result<Process> {
        Registry::global()
            .get(&sig.task)
            .map_err(|e| Error::Invalid(format!("cannot spawn {}: {}", sig.task, e.message)))?;
        let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
        let mut cmd = Command::new(exe);
        cmd.env(CHILD_ENV, std::process::id().to_string())
            .stdin(Stdio::piped());
        // Held until the child has started, so it inherits what the arguments describe.
        let _kept = take_kept();
        let fds = inherited_fds();
        // SAFETY: the closure only calls fcntl, which is async-signal-safe, on a list made
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                keep_across_exec(&fds);
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner()?
            .lock()
            .map_err(|_| Error::Invalid("the spawner thread's lock is poisoned".into()))?
            .send((cmd, tx))
            .map_err(|_| Error::Invalid("the spawner thread is gone".into()))?;
        let mut child = rx
            .recv()
            .map_err(|_| Error::Invalid("the spawner thread is gone".into()))?
            .map_err(|e| Error::io("starting a child process", e))?;
        let mut request = Vec::with_capacity(16 + sig.task.len() + sig.args.len());
        request.extend_from_slice(REQUEST_MAGIC);
        request.extend_from_slice(&(sig.task.len() as u32).to_le_bytes());
        request.extend_from_slice(sig.task.as_bytes());
        request.push(match sig.codec {
            Codec::Json => 0,
            Codec::Msgpack => 1,
        });
        request.extend_from_slice(&sig.args);
        if let Some(mut stdin) = child.stdin.take() {
            // A child that dies at once closes the pipe; its exit status tells why.
            let _ = stdin.write_all(&request);
        }
        Ok(Process {
            pid: child.id(),
            child: Mutex::new(child),
            status: Mutex::new(None),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it has (without waiting).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.poll().ok().flatten()
    }

    fn poll(&self) -> Result<Option<ExitStatus>> {
        let mut status = self
            .status
            .lock()
            .map_err(|_| Error::Invalid("process state lock poisoned".into()))?;
        if status.is_none() {
            let mut child = self
                .child
                .lock()
                .map_err(|_| Error::Invalid("process state lock poisoned".into()))?;
            if let Some(s) = child
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for process {}", self.pid), e))?
            {
                *status = Some(ExitStatus::from_std(s));
            }
        }
        Ok(*status)
    }

    /// True until the child has ended.
    pub fn is_alive(&self) -> bool {
        matches!(self.poll(), Ok(None))
    }

    /// Waits for the child to end.
    pub fn join(&self) -> Result<ExitStatus> {
        loop {
            if let Some(s) = self.join_timeout(Duration::from_secs(3600))? {
                return Ok(s);
            }
        }
    }

    /// Waits at most `timeout`; `None` if the child still runs.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if let Some(s) = self.poll()? {
                return Ok(Some(s));
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Ok(None);
            }
            std::thread::sleep(pause.min(timeout - elapsed));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Asks the child to stop (SIGTERM).
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Kills the child (SIGKILL).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, sig: i32) -> Result<()> {
        // Only while unreaped: after that the pid may belong to another process.
        let status = self
            .status
            .lock()
            .map_err(|_| Error::Invalid("process state lock poisoned".into()))?;
        if status.is_some() {
            return Ok(());
        }
        // SAFETY: signalling our own unreaped child.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig) } < 0 {
            return Err(Error::io(
                format!("signalling process {}", self.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// Call first in `main` (`lovage::init()` does): in a child started by [`Process::spawn`] it
/// runs the task and exits with its status, never returning; elsewhere it returns at once.
pub fn child_main() {
    let Ok(parent) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parent: i32 = parent.parse().unwrap_or(0);
    // SAFETY: plain system calls on this process.
    unsafe {
        // Die with the parent; if it is already gone, leave now.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
    std::env::remove_var(CHILD_ENV);
    let code = match read_request() {
        Err(e) => {
            eprintln!("lovage mp child {}: {e}", std::process::id());
            EXIT_BAD_REQUEST
        }
        Ok((name, codec, args)) => match Registry::global().get(&name) {
            Err(e) => {
                eprintln!("lovage mp child {}: {}", std::process::id(), e.message);
                EXIT_BAD_REQUEST
            }
            // The panic hook has already printed the panic; the exit code says it happened.
            Ok(entry) => match catch_unwind(AssertUnwindSafe(|| entry.call_blocking(&args, codec)))
            {
                Ok(Ok(_)) => 0,
                Ok(Err(e)) => {
                    eprintln!(
                        "lovage mp child {}: task {name} failed: {}: {}",
                        std::process::id(),
                        e.kind,
                        e.message
                    );
                    EXIT_TASK_FAILED
                }
                Err(_) => EXIT_PANIC,
            },
        },
    };
    std::process::exit(code);
}

fn read_request() -> std::result::Result<(String, Codec, Vec<u8>), String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the request: {e}"))?;
    let bad = || "the request on stdin is not a lovage mp request".to_owned();
    let rest = buf.strip_prefix(REQUEST_MAGIC).ok_or_else(bad)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len + 1 {
        return Err(bad());
    }
    let name = std::str::from_utf8(&rest[..len])
        .map_err(|_| bad())?
        .to_owned();
    let codec = match rest[len] {
        0 => Codec::Json,
        1 => Codec::Msgpack,
        _ => return Err(bad()),
    };
    Ok((name, codec, rest[len + 1..].to_vec()))
}
