//! One supervisor thread per child process: sends batches of requests, reads replies, enforces
//! hard time limits, notices deaths, and replaces the child.
//!
//! The child writes each reply before it starts the next task, so when it dies the first request
//! without a reply is the one that killed it; that one fails with `WorkerLost`, and the requests
//! queued behind it go to the replacement child.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lovage_core::{kinds, CancelReason, CancelToken, TaskError};

use super::frame::{self, KIND_CALL, KIND_INIT, KIND_SCOPED_CALL};
use super::{ProcJob, Shared};

/// Aim for about this much queued work per child, so batches are large for tiny tasks and a
/// slow task does not hold others hostage behind it.
const TARGET_QUEUED_WORK: Duration = Duration::from_millis(1);

struct ChildProcess {
    proc: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    calls_sent: usize,
}

enum InFlight {
    Init,
    Call {
        job: Arc<dyn ProcJob>,
        seq: u64,
        /// When the child began this request (when the previous reply arrived).
        started: Option<Instant>,
        /// The child was told this request passed its soft time limit.
        soft_signalled: bool,
    },
}

pub(crate) struct Slot {
    shared: Arc<Shared>,
    index: usize,
    child: Option<ChildProcess>,
    inflight: VecDeque<InFlight>,
    /// Requests that were sent to a child that died before running them.
    resend: VecDeque<Arc<dyn ProcJob>>,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    seq: u64,
    /// Moving average of one request's run time, to size batches.
    avg_service: Option<Duration>,
    /// Counted among the busy supervisors (see `Shared::take`).
    busy: bool,
}

impl Slot {
    pub(crate) fn new(shared: Arc<Shared>, index: usize) -> Self {
        Slot {
            shared,
            index,
            child: None,
            inflight: VecDeque::new(),
            resend: VecDeque::new(),
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            inbuf: Vec::with_capacity(64 * 1024),
            seq: 0,
            avg_service: None,
            busy: false,
        }
    }

    fn window(&self) -> usize {
        let max = self.shared.config.max_batch;
        let wanted = match self.avg_service {
            None => 2,
            Some(avg) if avg.is_zero() => max,
            Some(avg) => ((TARGET_QUEUED_WORK.as_nanos() / avg.as_nanos()) as usize).max(2),
        };
        wanted.min(max)
    }

    fn calls_in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn recycling(&self) -> bool {
        match (&self.child, self.shared.config.max_tasks_per_child) {
            (Some(c), Some(max)) => c.calls_sent >= max,
            _ => false,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let idle = self.inflight.is_empty() && self.out_pos >= self.out.len();
            if idle && self.recycling() {
                self.retire_child();
            }
            if !self.recycling() && !self.fill(idle) {
                break; // shut down and nothing left to do
            }
            if self.inflight.is_empty() {
                continue;
            }
            if let Err(reason) = self.pump() {
                self.child_failed(reason);
            }
        }
        self.retire_child();
    }

    /// Takes work: first requests to resend, then new ones. Blocks only when `idle`.
    /// False when the pool is shut down and nothing is queued.
    fn fill(&mut self, idle: bool) -> bool {
        let room = self.window().saturating_sub(self.calls_in_flight());
        if room == 0 {
            return true;
        }
        let mut jobs: Vec<Arc<dyn ProcJob>> = Vec::new();
        while jobs.len() < room {
            match self.resend.pop_front() {
                Some(j) => jobs.push(j),
                None => break,
            }
        }
        if jobs.is_empty() {
            match self.shared.take(
                self.index,
                room,
                idle && self.resend.is_empty(),
                &mut self.busy,
            ) {
                None => return !idle,
                Some(taken) => jobs.extend(taken.into_iter().filter(|j| j.try_start())),
            }
        }
        let max = self.shared.config.max_tasks_per_child;
        for job in jobs {
            if let Some(max) = max {
                if self.child.as_ref().is_some_and(|c| c.calls_sent >= max) {
                    self.resend.push_back(job);
                    continue;
                }
            }
            if self.child.is_none() {
                if let Err(e) = self.spawn_child() {
                    job.finish(Err(TaskError::new(
                        kinds::WORKER_LOST,
                        format!("cannot start a pool child process: {e}"),
                    )));
                    continue;
                }
            }
            self.send(job);
        }
        true
    }

    fn send(&mut self, job: Arc<dyn ProcJob>) {
        self.seq += 1;
        let req = job.request();
        frame::encode_request(
            &mut self.out,
            if req.scoped {
                KIND_SCOPED_CALL
            } else {
                KIND_CALL
            },
            self.seq,
            req.codec,
            &req.task,
            &req.args,
        );
        if let Some(c) = self.child.as_mut() {
            c.calls_sent += req.args.len();
        }
        let started = self.inflight.is_empty().then(Instant::now);
        self.inflight.push_back(InFlight::Call {
            job,
            seq: self.seq,
            started,
            soft_signalled: false,
        });
    }

    fn spawn_child(&mut self) -> io::Result<()> {
        let cfg = &self.shared.config;
        let mut cmd = Command::new(&cfg.program);
        cmd.env(super::child::CHILD_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (proc.stdin.take(), proc.stdout.take()) else {
            let _ = proc.kill();
            let _ = proc.wait();
            return Err(std::io::Error::other(
                "the child's stdin or stdout is not a pipe",
            ));
        };
        set_nonblocking(stdin.as_raw_fd())?;
        set_nonblocking(stdout.as_raw_fd())?;
        self.shared.set_pid(self.index, Some(proc.id()));
        self.child = Some(ChildProcess {
            proc,
            stdin: Some(stdin),
            stdout,
            calls_sent: 0,
        });
        self.out.clear();
        self.out_pos = 0;
        self.inbuf.clear();
        if let Some(init) = &cfg.initializer {
            self.seq += 1;
            frame::encode_request(
                &mut self.out,
                KIND_INIT,
                self.seq,
                init.codec,
                &init.task,
                std::slice::from_ref(&init.args),
            );
            self.inflight.push_front(InFlight::Init);
        }
        Ok(())
    }

    /// Waits for the child to accept requests or send replies, handles what arrived, enforces
    /// the front request's deadline. An `Err` means the child is gone (or must go): why.
    fn pump(&mut self) -> Result<(), ChildFailure> {
        let Some(child) = self.child.as_ref() else {
            return Err(ChildFailure::Lost);
        };
        let deadline = self.front_deadline();
        // A cancellable request is checked every few milliseconds.
        let deadline = match (deadline, self.front_cancellable()) {
            (d, false) => d,
            (None, true) => Some(Instant::now() + CANCEL_CHECK),
            (Some(d), true) => Some(d.min(Instant::now() + CANCEL_CHECK)),
        };
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
        };
        let want_write = self.out_pos < self.out.len();
        let mut fds = [
            libc::pollfd {
                fd: child.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: child.stdin.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: if want_write { libc::POLLOUT } else { 0 },
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(ChildFailure::Protocol(format!("poll failed: {e}")));
        }
        if want_write && fds[1].revents != 0 {
            self.write_out()?;
        }
        if fds[0].revents != 0 {
            self.read_in()?;
        }
        if let Some(d) = self.front_deadline() {
            if Instant::now() >= d {
                return Err(ChildFailure::TimeLimit);
            }
        }
        self.check_front_cancel()
    }

    fn front_cancellable(&self) -> bool {
        matches!(self.inflight.front(), Some(InFlight::Call { job, started: Some(_), .. }) if job.request().cancel.is_some())
    }

    /// Acts on the running request's cancel token: revoked kills the child, a soft time limit
    /// is signalled to it once.
    fn check_front_cancel(&mut self) -> Result<(), ChildFailure> {
        let pid = self.child.as_ref().map(|c| c.proc.id());
        let Some(InFlight::Call {
            job,
            seq,
            started: Some(_),
            soft_signalled,
        }) = self.inflight.front_mut()
        else {
            return Ok(());
        };
        match job.request().cancel.as_ref().and_then(CancelToken::reason) {
            Some(CancelReason::Revoked) => Err(ChildFailure::Revoked),
            Some(CancelReason::SoftTimeLimit) if !*soft_signalled => {
                *soft_signalled = true;
                if let Some(pid) = pid {
                    super::child::signal_soft_limit(pid as i32, *seq);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn front_deadline(&self) -> Option<Instant> {
        match self.inflight.front() {
            Some(InFlight::Call {
                job,
                started: Some(s),
                ..
            }) => job.request().time_limit.map(|l| *s + l),
            _ => None,
        }
    }

    fn write_out(&mut self) -> Result<(), ChildFailure> {
        let Some(stdin) = self.child.as_ref().and_then(|c| c.stdin.as_ref()) else {
            return Err(ChildFailure::Lost);
        };
        while self.out_pos < self.out.len() {
            let rest = &self.out[self.out_pos..];
            // SAFETY: writing from a live buffer to an fd we own.
            let n = unsafe { libc::write(stdin.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(ChildFailure::Lost), // EPIPE: the child is gone
                }
            }
            self.out_pos += n as usize;
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    fn read_in(&mut self) -> Result<(), ChildFailure> {
        let Some(child) = self.child.as_ref() else {
            return Err(ChildFailure::Lost);
        };
        let fd = child.stdout.as_raw_fd();
        let mut eof = false;
        loop {
            let len = self.inbuf.len();
            if self.inbuf.capacity() - len < 16 * 1024 {
                self.inbuf.reserve(64 * 1024);
            }
            let spare = self.inbuf.capacity() - len;
            // SAFETY: reading into the vector's spare capacity, then growing its length by
            // exactly the number of bytes the kernel wrote.
            let n = unsafe { libc::read(fd, self.inbuf.as_mut_ptr().add(len).cast(), spare) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(ChildFailure::Protocol(format!("read failed: {e}"))),
                }
            }
            if n == 0 {
                eof = true;
                break;
            }
            // SAFETY: read() initialised the n bytes after len, within the reserved capacity.
            unsafe { self.inbuf.set_len(len + n as usize) };
        }
        let mut pos = 0;
        while let Some(body) = frame::split_frame(&self.inbuf[pos..])
            .map_err(|e| ChildFailure::Protocol(e.to_string()))?
        {
            let body = pos + body.start..pos + body.end;
            let reply = frame::decode_reply(&self.inbuf[body.clone()])
                .map_err(|e| ChildFailure::Protocol(e.to_string()))?;
            pos = body.end;
            self.complete_front(reply)?;
        }
        self.inbuf.drain(..pos);
        if eof {
            return Err(ChildFailure::Lost);
        }
        Ok(())
    }

    fn complete_front(&mut self, reply: frame::Reply) -> Result<(), ChildFailure> {
        let frame::Reply {
            seq,
            outcomes,
            spawns,
        } = reply;
        let now = Instant::now();
        match self.inflight.pop_front() {
            Some(InFlight::Init) => {
                if let Some(Err(e)) = outcomes.into_iter().next() {
                    return Err(ChildFailure::Initializer(e));
                }
            }
            Some(InFlight::Call {
                job,
                seq: expected,
                started,
                soft_signalled,
            }) => {
                if seq != expected {
                    self.inflight.push_front(InFlight::Call {
                        job,
                        seq: expected,
                        started,
                        soft_signalled,
                    });
                    return Err(ChildFailure::Protocol(format!(
                        "reply for request {seq} while request {expected} was expected"
                    )));
                }
                if let Some(s) = started {
                    let per_item = (now - s) / job.request().args.len().max(1) as u32;
                    self.avg_service = Some(match self.avg_service {
                        None => per_item,
                        Some(a) => (a * 7 + per_item) / 8,
                    });
                }
                // Spawns count in their scope before the call that made them leaves it.
                job.spawned(spawns);
                job.finish(Ok(outcomes));
            }
            None => {
                return Err(ChildFailure::Protocol(format!(
                    "unexpected reply for request {seq}"
                )));
            }
        }
        if let Some(InFlight::Call { started, job, .. }) = self.inflight.front_mut() {
            if started.is_none() {
                *started = Some(now);
                job.mark_started();
            }
        }
        Ok(())
    }

    /// The child is dead or must die: reap it, fail the request it was running, and keep the
    /// rest for its replacement.
    fn child_failed(&mut self, reason: ChildFailure) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.shared.set_pid(self.index, None);
        let pid = child.proc.id();
        if !matches!(reason, ChildFailure::Lost) {
            let _ = child.proc.kill();
        }
        let status = child.proc.wait().ok();
        let died = describe_exit(pid, status);
        let front_error = match &reason {
            ChildFailure::TimeLimit => None,
            ChildFailure::Lost => Some(TaskError::new(
                kinds::WORKER_LOST,
                format!("the pool's child process {died} while running this task"),
            )),
            ChildFailure::Protocol(m) => Some(TaskError::new(
                kinds::WORKER_LOST,
                format!("the pool's child process {pid} broke the protocol ({m}) and was killed"),
            )),
            ChildFailure::Initializer(_) => None,
            ChildFailure::Revoked => Some(TaskError::new(
                kinds::REVOKED,
                format!("revoked while it ran; child process {pid} was killed"),
            )),
        };
        let mut inflight = std::mem::take(&mut self.inflight).into_iter();
        match reason {
            ChildFailure::Initializer(e) => {
                let err = TaskError::new(
                    kinds::INITIALIZER_FAILED,
                    format!("the pool's initializer failed in child process {pid}: {e}"),
                );
                for f in inflight {
                    if let InFlight::Call { job, .. } = f {
                        job.finish(Err(err.clone()));
                    }
                }
            }
            _ => {
                match inflight.next() {
                    Some(InFlight::Call { job, .. }) => {
                        let err = front_error.unwrap_or_else(|| {
                            let limit = job.request().time_limit.unwrap_or_default();
                            TaskError::new(
                                kinds::TIME_LIMIT_EXCEEDED,
                                format!("the task ran past its hard time limit of {limit:?}; child process {pid} was killed"),
                            )
                        });
                        job.finish(Err(err));
                    }
                    Some(InFlight::Init) => {
                        // Died in its initializer: every request sent to it fails, rather than
                        // retrying forever on a child that cannot start.
                        let err = TaskError::new(
                            kinds::INITIALIZER_FAILED,
                            format!(
                                "the pool's child process {died} while running the initializer"
                            ),
                        );
                        for f in inflight.by_ref() {
                            if let InFlight::Call { job, .. } = f {
                                job.finish(Err(err.clone()));
                            }
                        }
                    }
                    None => {}
                }
                for f in inflight.rev() {
                    if let InFlight::Call { job, .. } = f {
                        self.resend.push_front(job);
                    }
                }
            }
        }
        self.out.clear();
        self.out_pos = 0;
        self.inbuf.clear();
    }

    /// Closes the child's stdin and waits for it to exit (recycling or shutdown).
    fn retire_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.shared.set_pid(self.index, None);
            drop(child.stdin.take());
            let _ = child.proc.wait();
        }
    }
}

enum ChildFailure {
    /// The child exited or closed its pipe.
    Lost,
    /// The front request ran past its hard time limit.
    TimeLimit,
    /// The initializer returned an error.
    Initializer(TaskError),
    /// The child sent something that is not a valid reply.
    Protocol(String),
    /// The running request was revoked: the child is killed (Celery's terminate).
    Revoked,
}

/// How often a running, cancellable request's token is checked.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// "1234 was killed by signal 11 (SIGSEGV)", "1234 exited with code 3".
fn describe_exit(pid: u32, status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("{pid} exited with code {code}"),
            (None, Some(sig)) => format!("{pid} was killed by signal {sig} ({})", signal_name(sig)),
            _ => format!("{pid} ended ({s})"),
        },
        None => format!("{pid} vanished"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}
