//! Memory the csp process holds and no longer needs, handed back to the
//! system once it serves. Call [`starting`] first thing in `main` and
//! [`started`] once every service the process runs answers SERVING.
//!
//! Two things make an idle process larger than what it uses:
//!
//! - **Code pages.** Start-up runs code spread across the whole binary
//!   (migrations, the demo seed, descriptor pools, every service's set-up).
//!   The kernel maps the page cache around each page fault (fault-around,
//!   whole large folios), so about 200 faults at start leave about 17 MiB of
//!   the binary resident in an idle `csp up`. [`started`] asks the kernel to
//!   page the binary's read-only mappings out (`MADV_PAGEOUT`). They are
//!   clean copies of the file, so nothing is lost: what runs next faults its
//!   pages back in (from the page cache, or the disk if the kernel dropped
//!   them). The kernel does this only for a binary the process owns or may
//!   write (a rule against a side channel on shared files): `csp up` run by
//!   whoever built or installed it, not the container image, whose binary
//!   belongs to root.
//! - **Allocator pages.** mimalloc hands a freed page back to the system
//!   10 ms after it was freed, and only when the thread owning it allocates
//!   again. After start-up most threads (one per SQLite connection) go quiet
//!   holding pages freed while starting. Between [`starting`] and
//!   [`started`] freed pages go back at once; then the delay is what it was
//!   (purging at once under load cost about 30 times the `madvise` calls and
//!   6 times the page faults of the delayed purge in the benchmark).
//!
//! This is the workspace's only unsafe code (one call to the kernel, two to
//! the allocator, each with its safety argument). On systems other than
//! Linux the code half does nothing.

use std::ffi::c_long;
use std::sync::{Mutex, PoisonError};

/// What [`started`] handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of the binary's read-only mappings the kernel was asked to page
    /// out (mapped size, not resident size).
    pub advised: usize,
    /// Resident bytes of those mappings before and after.
    pub resident_before: u64,
    pub resident_after: u64,
}

/// The allocator's purge delay before [`starting`] set it to 0, until
/// [`started`] restores it.
static SAVED_PURGE_DELAY: Mutex<Option<c_long>> = Mutex::new(None);

/// Freed allocator pages go back to the system at once until [`started`].
pub fn starting() {
    let mut saved = SAVED_PURGE_DELAY
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if saved.is_none() {
        *saved = Some(allocator::purge_delay());
        allocator::set_purge_delay(0);
    }
}

/// Restores the allocator's purge delay, then pages out the binary's
/// read-only mappings. Logs what it did; a failure is logged and harmless.
pub fn started() -> Option<Released> {
    let saved = SAVED_PURGE_DELAY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(delay) = saved {
        allocator::set_purge_delay(delay);
    }
    match code::page_out() {
        Ok(released) => {
            tracing::info!(
                resident_mib_before = mib(released.resident_before),
                resident_mib_after = mib(released.resident_after),
                "handed the binary's start-up pages back to the system"
            );
            Some(released)
        }
        Err(error) => {
            tracing::debug!(%error, "could not hand start-up code pages back");
            None
        }
    }
}

/// Bytes as MiB with one decimal, for the log.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

mod allocator {
    use std::ffi::c_long;

    use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

    /// `mi_option_purge_delay` in mimalloc v2's `mimalloc.h` (the enum's
    /// 16th member); `libmimalloc-sys` does not name it. The test
    /// `starting_purges_at_once_and_started_restores_the_delay` checks
    /// that it still does.
    pub(crate) const PURGE_DELAY: mi_option_t = 15;

    #[allow(unsafe_code)]
    pub(crate) fn purge_delay() -> c_long {
        // SAFETY: mi_option_get reads one entry of mimalloc's option table
        // (initialising it from the environment on first use); any index
        // below `_mi_option_last` is valid, and 15 is.
        unsafe { mi_option_get(PURGE_DELAY) }
    }

    #[allow(unsafe_code)]
    pub(crate) fn set_purge_delay(milliseconds: c_long) {
        // SAFETY: mi_option_set stores one entry of mimalloc's option table;
        // the index is valid (above) and every value is allowed (0 purges at
        // once, -1 never).
        unsafe { mi_option_set(PURGE_DELAY, milliseconds) }
    }
}

#[cfg(target_os = "linux")]
mod code {
    use std::io;
    use std::path::Path;

    use super::Released;

    /// One line of `/proc/self/maps`.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct Mapping<'a> {
        pub start: usize,
        pub end: usize,
        pub writable: bool,
        pub path: &'a str,
    }

    impl<'a> Mapping<'a> {
        /// `start-end perms offset dev inode   path` (the path is empty for
        /// anonymous memory and may contain spaces).
        pub(crate) fn parse(line: &'a str) -> Option<Self> {
            let mut fields = line.splitn(6, ' ');
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let _offset = fields.next()?;
            let _device = fields.next()?;
            let _inode = fields.next()?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                writable: perms.as_bytes().get(1) == Some(&b'w'),
                path: fields.next().unwrap_or("").trim_start(),
            })
        }

        /// Whether this is a read-only mapping of the file `exe`.
        fn is_read_only_in(&self, exe: &Path) -> bool {
            !self.writable && Path::new(self.path) == exe
        }
    }

    #[allow(unsafe_code)]
    pub(crate) fn page_out() -> io::Result<Released> {
        let exe = std::fs::read_link("/proc/self/exe")?;
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let resident_before = resident(&exe)?;
        let mut advised = 0;
        for mapping in maps.lines().filter_map(Mapping::parse) {
            if !mapping.is_read_only_in(&exe) || mapping.end <= mapping.start {
                continue;
            }
            let length = mapping.end - mapping.start;
            // SAFETY: MADV_PAGEOUT changes no byte of memory: it only drops
            // the residency of these read-only, file-backed pages, which the
            // next access reads back from the file. No reference into the
            // range becomes invalid. The range is one whole mapping of this
            // process from /proc/self/maps (page-aligned); the executable's
            // mappings stay for the process's life, and were one gone, the
            // kernel would fail the call (ENOMEM) without touching anything.
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    length,
                    libc::MADV_PAGEOUT,
                )
            };
            if done != 0 {
                return Err(io::Error::last_os_error());
            }
            advised += length;
        }
        Ok(Released {
            advised,
            resident_before,
            resident_after: resident(&exe)?,
        })
    }

    /// Resident bytes of the read-only mappings of `exe` (the `Rss:` lines
    /// of `/proc/self/smaps` under them).
    pub(crate) fn resident(exe: &Path) -> io::Result<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut counted = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if let Some(mapping) = Mapping::parse(line) {
                counted = mapping.is_read_only_in(exe);
            } else if let Some(rss) = line.strip_prefix("Rss:").filter(|_| counted) {
                kib += rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim_end()
                    .parse::<u64>()
                    .map_err(|_| io::Error::other("unexpected Rss line in /proc/self/smaps"))?;
            }
        }
        Ok(kib * 1024)
    }
}

#[cfg(not(target_os = "linux"))]
mod code {
    pub(crate) fn page_out() -> std::io::Result<super::Released> {
        Err(std::io::Error::other(
            "paging code out is done on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests run one at a time: one counts resident pages, which
    /// another test's thread could fault in meanwhile.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// One test for everything that touches the allocator's options (tests
    /// run in parallel threads of one process).
    #[test]
    #[allow(unsafe_code)]
    fn starting_purges_at_once_and_started_restores_the_delay() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        // mimalloc's default purge delay is 10 ms; MIMALLOC_PURGE_DELAY
        // would change it, so the test reads the environment too. This
        // checks that index 15 still names the purge delay.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        assert_eq!(allocator::purge_delay(), expected);
        // SAFETY: 16 (use_numa_nodes, 0 by default) is below
        // `_mi_option_last`, as 15 is.
        let next = unsafe { libmimalloc_sys::mi_option_get(allocator::PURGE_DELAY + 1) };
        assert_eq!(
            next, 0,
            "the option after the purge delay is not use_numa_nodes"
        );

        starting();
        assert_eq!(allocator::purge_delay(), 0);
        starting(); // a second call keeps the first one's saved delay
        assert_eq!(allocator::purge_delay(), 0);
        let _ = started();
        assert_eq!(allocator::purge_delay(), expected);
        let _ = started(); // and a second `started` leaves it alone
        assert_eq!(allocator::purge_delay(), expected);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn maps_lines_parse_with_and_without_a_path() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        use code::Mapping;
        assert_eq!(
            Mapping::parse(
                "55c24c4db000-55c24c54d000 r-xp 00000000 fe:00 1234      /opt/my bin/csp"
            ),
            Some(Mapping {
                start: 0x55c2_4c4d_b000,
                end: 0x55c2_4c54_d000,
                writable: false,
                path: "/opt/my bin/csp",
            })
        );
        assert_eq!(
            Mapping::parse("7f079c000000-7f079c04f000 rw-p 00000000 00:00 0 "),
            Some(Mapping {
                start: 0x7f07_9c00_0000,
                end: 0x7f07_9c04_f000,
                writable: true,
                path: "",
            })
        );
        assert_eq!(Mapping::parse("not a mapping"), None);
    }

    /// The test binary's own code is paged out and keeps running: the
    /// kernel reads back what runs next.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_binary_s_code_is_paged_out_and_still_runs() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let released = code::page_out().expect("paging out the test binary's code");
        assert!(
            released.advised > 0,
            "no read-only mapping of the binary was found"
        );
        assert!(
            released.resident_before > 0 && released.resident_after < released.resident_before,
            "the binary's resident pages did not fall: {released:?}"
        );
        // Code the test did not run before still runs.
        let words: Vec<String> = ["paged", "back", "in"]
            .iter()
            .map(|w| w.to_uppercase())
            .collect();
        assert_eq!(words.join(" "), "PAGED BACK IN");
    }
}
