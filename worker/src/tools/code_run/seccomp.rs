//! The process backend's seccomp filter, as the classic BPF program bubblewrap loads
//! (`--seccomp FD`). Written by hand: a dozen instructions don't need a library. Refuses io_uring
//! (and, on x86_64, the rest of `DENIED`) with EPERM; kills a process that uses a foreign
//! syscall ABI (i386 `int 0x80`, x32) to go around the filter.

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = 0x0005_0000 | 1;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;

/// io_uring_setup, io_uring_enter, io_uring_register: the same numbers on every architecture.
#[cfg(not(target_arch = "x86_64"))]
const DENIED: &[u32] = &[425, 426, 427];
/// Also: ptrace, keyctl/add_key/request_key, bpf, perf_event_open, userfaultfd, kexec_load,
/// (f)init_module, mount, umount2, pivot_root, unshare, setns.
#[cfg(target_arch = "x86_64")]
const DENIED: &[u32] = &[
    425, 426, 427, 101, 250, 248, 249, 321, 298, 323, 246, 175, 313, 165, 166, 155, 272, 308,
];

/// The filter as bytes in the kernel's `struct sock_filter` layout (native endian).
pub fn program() -> Vec<u8> {
    let mut ins: Vec<(u16, u8, u8, u32)> = Vec::new();
    let n = DENIED.len();
    // [0] arch; [1] native? else [2] kill; [3] nr; [4] x32 bit? kill : go on
    ins.push((LD_W_ABS, 0, 0, 4));
    ins.push((JEQ_K, 1, 0, ARCH));
    ins.push((RET_K, 0, 0, RET_KILL_PROCESS));
    ins.push((LD_W_ABS, 0, 0, 0));
    // BPF only jumps forward, so the x32 check jumps to a second KILL at the very end, past the
    // n checks, ALLOW and EPERM.
    ins.push((JGE_K, (n + 2) as u8, 0, 0x4000_0000));
    for (i, nr) in DENIED.iter().enumerate() {
        // jump forward to the EPERM return, which sits right after ALLOW
        ins.push((JEQ_K, (n - i) as u8, 0, *nr));
    }
    ins.push((RET_K, 0, 0, RET_ALLOW));
    ins.push((RET_K, 0, 0, RET_EPERM));
    ins.push((RET_K, 0, 0, RET_KILL_PROCESS));
    ins.iter()
        .flat_map(|(code, jt, jf, k)| {
            let mut b = code.to_ne_bytes().to_vec();
            b.extend([*jt, *jf]);
            b.extend(k.to_ne_bytes());
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_program_is_whole_instructions() {
        let bytes = super::program();
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(bytes.len() / 8, 5 + super::DENIED.len() + 3);
    }
}
