//! The process backend, for hosts without Docker: bubblewrap puts the interpreter in new user,
//! pid, network, mount, ipc, uts and cgroup namespaces with a read-only `/usr`, a private tmpfs
//! `/tmp` (the only writable filesystem: `/dev` is read-only), a cleared environment, no capabilities, no further user namespaces and a seccomp
//! filter (seccomp.rs); `prlimit` sets the rlimits; as root, `setpriv` first moves the run to a
//! uid of its own, so RLIMIT_NPROC counts this run's processes only. At the timeout (or when the
//! future is dropped) the outer bwrap is killed; `--die-with-parent` then kills the sandbox's
//! pid 1, and with it every process in the pid namespace, including ones that called setsid().

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use agentq_shared::config::CodeRunSettings;
use agentq_shared::tools::ToolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::limits::Capped;
use super::{Language, Request, RunOutput, program, seccomp};

pub struct ProcessBackend {
    settings: CodeRunSettings,
    /// The seccomp program, handed to bwrap on fd 3.
    filter: PathBuf,
    /// bwrap's options (NUL-separated), handed to it on fd 4 with `--args 4`, so the sandbox's
    /// pid 1 (a copy of bwrap) shows only `bwrap --args 4 -- <interpreter> ...` as its command
    /// line, nothing of the host's paths or the limits.
    bwrap_args: PathBuf,
    as_root: bool,
}

impl ProcessBackend {
    pub fn new(settings: &CodeRunSettings) -> Self {
        let scratch = |what: &str| {
            std::env::temp_dir().join(format!(
                "agentq-code-run-{}-{}.{what}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ))
        };
        let filter = scratch("bpf");
        if let Err(e) = std::fs::write(&filter, seccomp::program()) {
            tracing::error!(error = %e, "code_run: cannot write the seccomp filter; runs will fail");
        }
        let bwrap_args = scratch("args");
        let options: Vec<u8> = self::bwrap_args(settings)
            .into_iter()
            .flat_map(|arg| arg.into_bytes().into_iter().chain([0]))
            .collect();
        if let Err(e) = std::fs::write(&bwrap_args, options) {
            tracing::error!(error = %e, "code_run: cannot write the sandbox's options; runs will fail");
        }
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !as_root {
            tracing::warn!(
                "code_run: not root, so RLIMIT_NPROC counts all of this user's processes"
            );
        }
        Self {
            settings: settings.clone(),
            filter,
            bwrap_args,
            as_root,
        }
    }

    /// The whole command line: `sh` opens the filter on fd 3 and bwrap's arguments on fd 4, then
    /// execs (setpriv) prlimit bwrap. It starts in `/`, so no wrapper (and no `PWD` that `sh`
    /// exports) carries the worker's working directory.
    fn command(&self, language: Language) -> Command {
        let limits = &self.settings.limits;
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "f=$1; a=$2; shift 2; exec \"$@\" 3<\"$f\" 4<\"$a\"",
            "sh",
        ]);
        cmd.arg(&self.filter);
        cmd.arg(&self.bwrap_args);
        if self.as_root {
            // A uid no one else uses: its process count is this run's alone.
            let uid = 1_000_000 + rand::random::<u32>() % 1_000_000_000;
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
            ]);
            cmd.args(["--clear-groups", "--inh-caps=-all", "--"]);
        }
        let cpu_secs = limits.timeout.as_secs() + 1;
        let memory = match language {
            // V8 reserves far more address space than it uses: cap data and the heap instead.
            Language::Javascript => format!("--data={}", limits.memory_bytes),
            Language::Python => format!("--as={}", limits.memory_bytes),
        };
        cmd.args([
            "prlimit".into(),
            memory,
            format!("--cpu={cpu_secs}"),
            format!("--nproc={}", limits.pids),
            format!("--fsize={}", limits.file_size_bytes),
            format!("--nofile={}", limits.open_files),
            "--".into(),
        ]);
        cmd.args(["bwrap", "--args", "4"]);
        cmd.args(program_args(&self.settings, language));
        // The worker's environment never reaches even the wrappers.
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.current_dir("/");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0).kill_on_drop(true);
        cmd
    }

    pub async fn run(&self, request: &Request) -> Result<RunOutput, ToolError> {
        let started = Instant::now();
        let limits = &self.settings.limits;
        // kill_on_drop: dropping this future SIGKILLs bwrap, which takes the namespace down.
        let mut child = self.command(request.language).spawn().map_err(|e| {
            tracing::warn!(error = %e, "code_run: could not start bwrap");
            ToolError("the sandbox failed to start the program".into())
        })?;
        let (Some(mut stdin), Some(mut out), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ToolError("the sandbox failed to start the program".into()));
        };
        let frame = program::frame(request, None);
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&frame).await;
        });
        let (mut stdout, mut stderr) = (
            Capped::new(limits.output_bytes),
            Capped::new(limits.output_bytes),
        );
        let deadline = tokio::time::Instant::from_std(started + limits.timeout);
        let (mut out_open, mut err_open) = (true, true);
        let (mut timed_out, mut flooded) = (false, false);
        let (mut obuf, mut ebuf) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
        while out_open || err_open {
            tokio::select! {
                n = out.read(&mut obuf), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => stdout.push(&obuf[..n]),
                },
                n = err.read(&mut ebuf), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => stderr.push(&ebuf[..n]),
                },
                () = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    break;
                }
            }
            if stdout.flooding() || stderr.flooding() {
                flooded = true;
                break;
            }
        }
        writer.abort();
        if timed_out || flooded {
            let _ = child.start_kill();
        }
        let status = tokio::time::timeout_at(deadline, child.wait()).await;
        let status = match status {
            Ok(status) => status.ok(),
            Err(_) => {
                timed_out = true;
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        };
        let exit_code = status.and_then(|s| {
            s.code()
                .map(i64::from)
                .or_else(|| s.signal().map(|sig| 128 + i64::from(sig)))
        });
        let stderr_text = stderr.text();
        let oom_killed =
            !timed_out && exit_code.is_some_and(|c| c != 0) && out_of_memory(&stderr_text);
        Ok(RunOutput {
            truncated: stdout.truncated() || stderr.truncated(),
            stdout: stdout.text(),
            stderr: stderr_text,
            exit_code,
            timed_out,
            oom_killed,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

pub fn bwrap_available() -> bool {
    let version = std::process::Command::new("bwrap")
        .arg("--version")
        .output();
    version.is_ok_and(|o| o.status.success())
}

/// Without a memory cgroup, running out of memory shows as the interpreter's own report.
fn out_of_memory(stderr: &str) -> bool {
    let tail = &stderr[stderr.len().saturating_sub(2048)..];
    tail.lines().any(|l| l.starts_with("MemoryError"))
        || tail.contains("JavaScript heap out of memory")
        || tail.contains("Fatal process out of memory")
}

/// bwrap's options: the namespaces, the filesystem, the environment.
///
/// The only writable filesystem is the size-limited `/tmp`: `/dev` holds just the usual devices
/// (null, zero, full, random, urandom, tty) and is read-only, so `/dev/shm` cannot be written
/// either; bwrap's own root is read-only too.
fn bwrap_args(settings: &CodeRunSettings) -> Vec<String> {
    let limits = &settings.limits;
    let id = limits.uid.to_string();
    [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--uid",
        &id,
        "--gid",
        &id,
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--ro-bind-try",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--remount-ro",
        "/dev",
        "--size",
        &limits.tmpfs_bytes.to_string(),
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--remount-ro",
        "/",
        "--seccomp",
        "3",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// The program bwrap runs (bwrap takes it on its command line, not from `--args`).
fn program_args(settings: &CodeRunSettings, language: Language) -> Vec<String> {
    let (interpreter, heap_mb) = match language {
        Language::Python => (&settings.python_bin, None),
        Language::Javascript => (&settings.node_bin, Some(settings.limits.memory_bytes >> 21)),
    };
    let mut args = vec!["--".to_owned(), interpreter.clone()];
    args.extend(program::args(language, heap_mb));
    args
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.filter);
        let _ = std::fs::remove_file(&self.bwrap_args);
    }
}
