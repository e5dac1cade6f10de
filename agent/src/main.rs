//! The `threatbeat` binary; see the library for everything it does.

// mimalloc: -28 % CPU and -35 % RSS against the system allocator; built
// without transparent huge pages, which made RSS grow in 2 MiB steps
// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the binding
/// crate has no constant for it; the test below checks the number).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before it goes back to the system.
/// Pages are decoded, processed, queued and sent on different threads, so
/// much memory is freed away from where it was allocated and waits for the
/// purge. On the shared yardstick (200 000 MISP attributes, 4 paired runs)
/// 250 ms peaked at 99–110 MB and 50 ms at 77–79 MB, for about 6 % more
/// CPU; 0 gives 63 MB for 30 % more (docs/performance.md).
const PURGE_DELAY_MS: std::ffi::c_long = 50;

fn main() -> std::process::ExitCode {
    // What the agent writes — queue segments holding TLP:RED indicators,
    // cursors, the current-state store, the keystore, logs, the file
    // output — is for its own user only: files 0600, folders 0700, also
    // those made later (segments, log rotation).
    // SAFETY: sets the process's file-creation mask; no memory is involved.
    unsafe { libc::umask(0o077) };
    // A MIMALLOC_PURGE_DELAY set by the operator wins (mimalloc reads it at load).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide number that mimalloc reads atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    threatbeat::commands::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc 3's default purge delay; another option at 15 would not read 1000.
        // SAFETY: reads a process-wide option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            1000
        );
    }
}
