//! Memory the csp process holds and no longer needs, handed back to the
//! system once it serves. A long-running command calls [`starting`] before
//! its runtime starts threads, and [`started`] once every service the
//! process runs answers SERVING.
//!
//! Two things make an idle process larger than what it uses:
//!
//! - **The binary's pages.** Start-up runs code spread across the whole
//!   binary (migrations, the demo seed, descriptor pools, every service's
//!   set-up). The kernel maps the page cache around each page fault, so about
//!   200 faults at start leave about 17 MiB of the binary resident in an idle
//!   `csp up`. [`started`] asks the kernel to page out the binary's read-only
//!   mappings that are still plain copies of the file (`MADV_PAGEOUT`; the
//!   relocated `.data.rel.ro` pages the loader wrote are left alone). Nothing
//!   is lost: what runs next faults its pages back in, from the page cache or
//!   the disk. The kernel does this only for a binary the process owns or may
//!   write (a rule against a side channel on shared files): `csp up` run by
//!   whoever built or installed it, not the container image, whose binary
//!   belongs to root.
//! - **Allocator pages.** mimalloc hands a freed page back to the system
//!   10 ms after it was freed, and only when the thread owning it allocates
//!   again. After start-up most threads (one per SQLite connection) go quiet
//!   holding pages freed while starting. Between [`starting`] and
//!   [`started`] freed pages go back at once; then the delay is what it was
//!   (purging at once under load cost 34 times the `madvise` calls and 6
//!   times the page faults of the delayed purge in the benchmark's gateway
//!   reads).
//!
//! This is the workspace's only unsafe code: one call to the kernel and two
//! to the allocator, each with its safety argument. On systems other than
//! Linux the binary's pages stay.

use std::ffi::c_long;
use std::sync::{Mutex, PoisonError};

/// What [`started`] did with the binary's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of the binary's mappings the kernel was asked to page out
    /// (mapped size, not resident size).
    pub advised: usize,
    /// Resident bytes of the binary's read-only mappings before.
    pub resident_before: u64,
    /// Resident bytes of the binary's read-only mappings after.
    pub resident_after: u64,
}

/// The allocator's purge delay before [`starting`] set it to 0, until
/// [`started`] restores it.
static SAVED_PURGE_DELAY: Mutex<Option<c_long>> = Mutex::new(None);

/// Freed allocator pages go back to the system at once until [`started`].
/// Call it before the runtime starts its threads.
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
/// read-only pages. Logs what it did; a failure is logged and harmless.
/// Blocks for a few milliseconds (it reads `/proc/self/smaps`).
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
                advised_mib = mib(released.advised as u64),
                resident_mib_before = mib(released.resident_before),
                resident_mib_after = mib(released.resident_after),
                "handed the binary's start-up pages back to the system"
            );
            Some(released)
        }
        Err(error) => {
            tracing::info!(%error, "the binary's start-up pages stay resident");
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

    use libmimalloc_sys::{
        mi_option_eager_commit_delay, mi_option_get, mi_option_set, mi_option_t,
        mi_option_use_numa_nodes,
    };

    /// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3: the
    /// enum member between `eager_commit_delay` and `use_numa_nodes`, which
    /// `libmimalloc-sys` names; it does not name this one).
    pub(crate) const PURGE_DELAY: mi_option_t = 15;
    const _: () = assert!(
        mi_option_eager_commit_delay + 1 == PURGE_DELAY
            && PURGE_DELAY + 1 == mi_option_use_numa_nodes,
        "mimalloc's option enum moved: find mi_option_purge_delay in mimalloc.h again"
    );

    #[allow(unsafe_code)]
    pub(crate) fn purge_delay() -> c_long {
        // SAFETY: mi_option_get reads one entry of mimalloc's option table
        // (initialising it from the environment on first use); any index
        // below `_mi_option_last` is valid, and PURGE_DELAY is (checked
        // above against the names libmimalloc-sys gives its neighbours).
        unsafe { mi_option_get(PURGE_DELAY) }
    }

    #[allow(unsafe_code)]
    pub(crate) fn set_purge_delay(milliseconds: c_long) {
        // SAFETY: mi_option_set stores one aligned `long` in mimalloc's
        // option table (valid index, above; every value is allowed: 0
        // purges at once, -1 never). Other threads read that entry without
        // synchronisation when they free or purge: `starting` runs before
        // the runtime's threads exist, and the one store in `started` is a
        // single aligned word, so a thread sees either the old delay or
        // the new one, never a mix; which one only decides when a free page
        // is handed back.
        unsafe { mi_option_set(PURGE_DELAY, milliseconds) }
    }
}

#[cfg(target_os = "linux")]
mod code {
    use std::io;
    use std::path::Path;

    use super::Released;

    /// The header line of one mapping in `/proc/self/maps` or
    /// `/proc/self/smaps`.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct Mapping<'a> {
        pub start: usize,
        pub end: usize,
        pub writable: bool,
        pub path: &'a str,
    }

    impl<'a> Mapping<'a> {
        /// `start-end perms offset dev inode   path` (the path is empty for
        /// anonymous memory and may contain spaces). No other line of smaps
        /// starts with two hex numbers joined by `-`.
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
            !self.writable && Path::new(self.path) == exe && self.start < self.end
        }
    }

    /// A read-only mapping of the binary, as smaps counts it.
    pub(crate) struct Counted {
        pub start: usize,
        pub end: usize,
        /// Resident bytes.
        pub resident: u64,
        /// Bytes the process wrote or the loader relocated (copies, not
        /// the file's pages).
        pub anonymous: u64,
    }

    #[allow(unsafe_code)]
    pub(crate) fn page_out() -> io::Result<Released> {
        let exe = std::fs::read_link("/proc/self/exe")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read /proc/self/exe: {e}")))?;
        let before = read_only_mappings(&exe)?;
        let mut advised = 0;
        let mut failure = None;
        // Only mappings that are still plain copies of the file: the
        // relocated `.data.rel.ro` pages are anonymous and in use (they
        // would go to swap, if any, and fault straight back).
        for mapping in before.iter().filter(|m| m.anonymous == 0) {
            let length = mapping.end - mapping.start;
            // SAFETY: MADV_PAGEOUT changes no byte of memory on any range:
            // it only drops the residency of pages, and file pages are read
            // back from the file (anonymous ones from swap) on the next
            // access. No reference into the range becomes invalid. The
            // range is one whole, page-aligned mapping of this process read
            // from /proc/self/smaps just now; the executable's mappings stay
            // for the process's life.
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    length,
                    libc::MADV_PAGEOUT,
                )
            };
            if done == 0 {
                advised += length;
            } else if failure.is_none() {
                failure = Some(io::Error::last_os_error());
            }
        }
        if let Some(error) = failure.filter(|_| advised == 0) {
            return Err(io::Error::new(
                error.kind(),
                format!("madvise(MADV_PAGEOUT) on the binary failed: {error}"),
            ));
        }
        Ok(Released {
            advised,
            resident_before: before.iter().map(|m| m.resident).sum(),
            resident_after: read_only_mappings(&exe)?.iter().map(|m| m.resident).sum(),
        })
    }

    /// The read-only mappings of `exe` with their `Rss:` and `Anonymous:`
    /// lines from `/proc/self/smaps`.
    pub(crate) fn read_only_mappings(exe: &Path) -> io::Result<Vec<Counted>> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read /proc/self/smaps: {e}")))?;
        let mut mappings: Vec<Counted> = Vec::new();
        let mut counting = false;
        for line in smaps.lines() {
            if let Some(mapping) = Mapping::parse(line) {
                counting = mapping.is_read_only_in(exe);
                if counting {
                    mappings.push(Counted {
                        start: mapping.start,
                        end: mapping.end,
                        resident: 0,
                        anonymous: 0,
                    });
                }
                continue;
            }
            let Some(counted) = mappings.last_mut().filter(|_| counting) else {
                continue;
            };
            if let Some(kib) = line.strip_prefix("Rss:") {
                counted.resident = bytes(kib)?;
            } else if let Some(kib) = line.strip_prefix("Anonymous:") {
                counted.anonymous = bytes(kib)?;
            }
        }
        Ok(mappings)
    }

    /// `   1234 kB` as bytes.
    fn bytes(kib: &str) -> io::Result<u64> {
        kib.trim()
            .trim_end_matches("kB")
            .trim_end()
            .parse::<u64>()
            .map(|kib| kib * 1024)
            .map_err(|_| io::Error::other("/proc/self/smaps has a size that is not N kB"))
    }
}

#[cfg(not(target_os = "linux"))]
mod code {
    pub(crate) fn page_out() -> std::io::Result<super::Released> {
        Err(std::io::Error::other(
            "paging the binary out is done on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests run one at a time: one counts resident pages, which
    /// another test's thread could fault in meanwhile.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn starting_purges_at_once_and_started_restores_the_delay() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let delay = allocator::purge_delay();
        assert_ne!(
            delay, 0,
            "mimalloc already purges at once before `starting`"
        );
        starting();
        assert_eq!(allocator::purge_delay(), 0);
        starting(); // a second call keeps the first one's saved delay
        assert_eq!(allocator::purge_delay(), 0);
        let _ = started();
        assert_eq!(allocator::purge_delay(), delay);
        let _ = started(); // and a second `started` leaves it alone
        assert_eq!(allocator::purge_delay(), delay);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn maps_lines_parse_with_and_without_a_path() {
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
        assert_eq!(Mapping::parse("Rss:                 132 kB"), None);
        assert_eq!(Mapping::parse("not a mapping"), None);
    }

    /// The test binary (owned by whoever built it, so the kernel agrees)
    /// has its file pages paged out, not the pages the loader relocated,
    /// and goes on running: what runs next is read back in.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_binary_s_file_pages_are_paged_out_and_its_relocated_pages_are_not() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let exe = std::fs::read_link("/proc/self/exe").expect("the test binary's path");
        let mappings = code::read_only_mappings(&exe).expect("the test binary's mappings");
        let mapped: usize = mappings.iter().map(|m| m.end - m.start).sum();
        let relocated: usize = mappings
            .iter()
            .filter(|m| m.anonymous > 0)
            .map(|m| m.end - m.start)
            .sum();
        assert!(
            relocated > 0,
            "a PIE binary has relocated read-only pages (.data.rel.ro)"
        );

        let released = code::page_out().expect("paging out the test binary's pages");
        assert_eq!(released.advised, mapped - relocated, "{released:?}");
        assert!(
            released.resident_after < released.resident_before,
            "the binary's resident pages did not fall: {released:?}"
        );
    }
}
