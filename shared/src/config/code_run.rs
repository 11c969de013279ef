//! Settings of `code_run` (the sandbox): which backend, which images, and the limits every run
//! gets. The limits' defaults are written once, in `SandboxLimits::default`; both backends read
//! the same struct (worker/src/tools/code_run/limits.rs says how each limit is enforced).

use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, Env};

/// `AGENTQ_SANDBOX`: where code runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SandboxMode {
    /// Docker when an engine answers at start, else the process backend.
    #[default]
    Auto,
    /// Docker only: the worker refuses to start without an engine.
    Docker,
    /// The namespace + rlimit process sandbox (bubblewrap), for hosts without Docker.
    Process,
    /// The tool is not offered.
    Off,
}

impl FromStr for SandboxMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "docker" => Ok(Self::Docker),
            "process" => Ok(Self::Process),
            "off" => Ok(Self::Off),
            _ => Err(()),
        }
    }
}

/// What one run may use. Every field is a setting; the defaults are the issue's.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// Memory of the whole sandbox; swap is off.
    pub memory_bytes: u64,
    /// Share of one CPU, in percent.
    pub cpu_percent: u32,
    /// Processes and threads at once (a fork bomb stops here).
    pub pids: u32,
    /// Wall clock; then everything in the sandbox is killed.
    pub timeout: Duration,
    /// Kept per stream (stdout, stderr); more is dropped and the result says `truncated`.
    pub output_bytes: usize,
    /// Size of the writable `/tmp` (the root is read-only).
    pub tmpfs_bytes: u64,
    /// Largest file the code may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
    /// The unprivileged user the code runs as, inside the sandbox.
    pub uid: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            cpu_percent: 50,
            pids: 64,
            timeout: Duration::from_secs(30),
            output_bytes: 64 << 10,
            tmpfs_bytes: 16 << 20,
            file_size_bytes: 8 << 20,
            open_files: 64,
            uid: 65534,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CodeRunSettings {
    pub mode: SandboxMode,
    /// Docker image per language; production defaults are the official slim images,
    /// deploy/sandbox/build-images.sh builds offline equivalents.
    pub python_image: String,
    pub node_image: String,
    /// Pre-created, never-started containers kept per language (0 turns the pool off).
    pub pool_size: usize,
    /// Interpreters of the process backend, bound read-only into the sandbox.
    pub python_bin: String,
    pub node_bin: String,
    pub limits: SandboxLimits,
}

impl Default for CodeRunSettings {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Auto,
            python_image: "python:3.11-slim".into(),
            node_image: "node:20-slim".into(),
            pool_size: 2,
            python_bin: "/usr/bin/python3".into(),
            node_bin: "/usr/bin/node".into(),
            limits: SandboxLimits::default(),
        }
    }
}

impl CodeRunSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let l = &d.limits;
        let mb = |var, default: u64| env.parsed(var, default >> 20, "a number of megabytes");
        let limits = SandboxLimits {
            memory_bytes: mb("AGENTQ_SANDBOX_MEMORY_MB", l.memory_bytes)? << 20,
            cpu_percent: env.parsed(
                "AGENTQ_SANDBOX_CPU_PERCENT",
                l.cpu_percent,
                "a percentage of one CPU, such as 50",
            )?,
            pids: env.parsed("AGENTQ_SANDBOX_PIDS", l.pids, "a number of processes")?,
            timeout: env.millis("AGENTQ_SANDBOX_TIMEOUT_MS", l.timeout.as_millis() as u64)?,
            output_bytes: env.parsed(
                "AGENTQ_SANDBOX_OUTPUT_BYTES",
                l.output_bytes,
                "a number of bytes",
            )?,
            tmpfs_bytes: mb("AGENTQ_SANDBOX_TMPFS_MB", l.tmpfs_bytes)? << 20,
            file_size_bytes: mb("AGENTQ_SANDBOX_FILE_SIZE_MB", l.file_size_bytes)? << 20,
            open_files: env.parsed("AGENTQ_SANDBOX_OPEN_FILES", l.open_files, "a number")?,
            uid: env.parsed("AGENTQ_SANDBOX_UID", l.uid, "a numeric user id")?,
        };
        if limits.cpu_percent == 0 || limits.memory_bytes == 0 || limits.pids == 0 {
            return Err(ConfigError::Malformed {
                var: "AGENTQ_SANDBOX_MEMORY_MB/CPU_PERCENT/PIDS",
                value: "0".into(),
                expected: "limits above zero",
            });
        }
        Ok(Self {
            mode: env.parsed("AGENTQ_SANDBOX", d.mode, "auto, docker, process or off")?,
            python_image: env
                .raw("AGENTQ_SANDBOX_PYTHON_IMAGE")
                .unwrap_or(d.python_image),
            node_image: env.raw("AGENTQ_SANDBOX_NODE_IMAGE").unwrap_or(d.node_image),
            pool_size: env.parsed("AGENTQ_SANDBOX_POOL", d.pool_size, "a number of containers")?,
            python_bin: env.raw("AGENTQ_SANDBOX_PYTHON_BIN").unwrap_or(d.python_bin),
            node_bin: env.raw("AGENTQ_SANDBOX_NODE_BIN").unwrap_or(d.node_bin),
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_are_the_issues_limits() {
        let settings = CodeRunSettings::from_env(&env(&[])).unwrap();
        assert_eq!(settings, CodeRunSettings::default());
        assert_eq!(settings.limits.memory_bytes, 128 * 1024 * 1024);
        assert_eq!(settings.limits.cpu_percent, 50);
        assert_eq!(settings.limits.timeout, Duration::from_secs(30));
        assert_eq!(settings.python_image, "python:3.11-slim");
        assert_eq!(settings.node_image, "node:20-slim");
    }

    #[test]
    fn every_knob_is_read_and_errors_name_the_variable() {
        let settings = CodeRunSettings::from_env(&env(&[
            ("AGENTQ_SANDBOX", "Process"),
            ("AGENTQ_SANDBOX_MEMORY_MB", "256"),
            ("AGENTQ_SANDBOX_TIMEOUT_MS", "1500"),
            ("AGENTQ_SANDBOX_POOL", "0"),
            ("AGENTQ_SANDBOX_PYTHON_IMAGE", "py:local"),
        ]))
        .unwrap();
        assert_eq!(settings.mode, SandboxMode::Process);
        assert_eq!(settings.limits.memory_bytes, 256 << 20);
        assert_eq!(settings.limits.timeout, Duration::from_millis(1500));
        assert_eq!(settings.pool_size, 0);
        assert_eq!(settings.python_image, "py:local");
        let err = CodeRunSettings::from_env(&env(&[("AGENTQ_SANDBOX", "vm")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("AGENTQ_SANDBOX=\"vm\" is malformed"),
            "{err}"
        );
        let err = CodeRunSettings::from_env(&env(&[("AGENTQ_SANDBOX_PIDS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AGENTQ_SANDBOX_PIDS=\"lots\""), "{err}");
    }
}
