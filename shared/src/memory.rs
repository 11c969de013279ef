//! The processes' resident size.
//!
//! mimalloc advises transparent huge pages for its arena, and where the kernel grants them
//! (`enabled` set to `always` or `madvise`, as on Debian) each 2 MiB of address space that the
//! heap touches becomes resident whole. An idle worker, whose live heap is about 3 MB, was then
//! 34–36 MB resident instead of 24 (docs/benchmarks.md, "memory"). The services turn huge
//! pages off for themselves at start; the allocator keeps its speed (the steps benchmark is the
//! same within its spread).

/// Turns transparent huge pages off for this process (and the processes it starts). Call once,
/// first thing in `main`: pages the heap touched before stay as they are.
pub fn small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "cannot turn transparent huge pages off; the resident size will be larger");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn huge_pages_are_off_after_small_pages() {
        super::small_pages();
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
    }
}
