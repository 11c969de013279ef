//! The sandbox's limits, and how each backend enforces them. The numbers are data, written once
//! in `SandboxLimits::default()` (shared/src/config/code_run.rs) and overridable per deployment;
//! the drivers (`docker.rs`, `process.rs`) only translate them:
//!
//! | limit             | Docker backend                          | process backend (bubblewrap)       |
//! |-------------------|-----------------------------------------|------------------------------------|
//! | memory, swap off  | cgroup `memory` = `memory_swap`         | RLIMIT_AS (Python), RLIMIT_DATA + V8 heap cap (Node) |
//! | CPU share         | `nano_cpus`                             | RLIMIT_CPU (CPU seconds ≈ timeout) |
//! | processes         | `pids_limit`                            | RLIMIT_NPROC on a uid of its own   |
//! | network           | `network_mode: none`                    | new network namespace              |
//! | file system       | read-only root, tmpfs `/tmp`            | read-only binds, tmpfs `/tmp`      |
//! | privileges        | cap drop ALL, no-new-privileges, uid    | new user namespace, uid, no caps   |
//! | file size, fds    | ulimits `fsize`, `nofile`               | RLIMIT_FSIZE, RLIMIT_NOFILE        |
//! | syscalls          | seccomp profile (`DENIED_SYSCALLS`)     | seccomp BPF (io_uring) + `--disable-userns` |
//! | environment       | empty                                   | cleared                            |
//! | wall clock        | kill at `timeout`                       | kill at `timeout` (pid namespace)  |

pub use agentq_shared::config::SandboxLimits;

/// Label on every sandbox container; the worker removes stale ones at start.
pub const LABEL: &str = "agentq.sandbox";

/// Once this many times the output cap has streamed past, the run is killed (a flood would
/// otherwise burn CPU until the timeout).
pub const FLOOD_FACTOR: usize = 16;

/// Syscalls refused inside Docker containers (with EPERM), on top of dropping every capability.
/// Docker 20.10's default profile allows io_uring, so the profile is ours (FIELD_NOTES).
pub const DENIED_SYSCALLS: &[&str] = &[
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // namespaces: nested user namespaces and friends (clone with CLONE_NEWUSER below)
    "unshare",
    "setns",
    // mounts and the file system tree
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_by_handle_at",
    "name_to_handle_at",
    // kernel, modules, time, accounting
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "nfsservctl",
    // introspection and kernel attack surface
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "personality",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "fanotify_init",
];

/// The seccomp profile given to Docker: allow by default, refuse `DENIED_SYSCALLS`, refuse
/// `clone` with CLONE_NEWUSER, and make `clone3` unavailable (ENOSYS, so libc falls back to
/// `clone`, whose flags the filter can see).
pub fn docker_seccomp_profile() -> serde_json::Value {
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
             "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                       "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })
}

/// One output stream, kept up to `cap` bytes; the rest is counted and dropped.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<u8>,
    cap: usize,
    seen: usize,
}

impl Capped {
    pub fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            cap,
            seen: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len();
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.cap
    }

    /// The output is so far past the cap that the run should be stopped.
    pub fn flooding(&self) -> bool {
        self.seen > self.cap.saturating_mul(FLOOD_FACTOR)
    }

    /// The kept bytes as text (invalid UTF-8, e.g. a character cut at the cap, is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_the_head_and_flags_the_rest() {
        let mut out = Capped::new(4);
        out.push(b"ab");
        assert!(!out.truncated());
        out.push(b"cdef");
        assert_eq!(out.text(), "abcd");
        assert!(out.truncated());
        assert!(!out.flooding());
        out.push(&[b'x'; 64]);
        assert!(out.flooding());
        assert_eq!(out.text(), "abcd");
    }

    #[test]
    fn the_docker_profile_denies_io_uring_and_user_namespaces() {
        let profile = docker_seccomp_profile().to_string();
        for name in ["io_uring_setup", "io_uring_enter", "unshare", "clone3"] {
            assert!(profile.contains(&format!("\"{name}\"")), "{name}");
        }
    }
}
