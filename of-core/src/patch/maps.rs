//! The mapping that holds an address, from `/proc/self/maps` (proc(5)): its range, protection
//! and whether it is private. Read by the patcher thread (ordinary code), never by a handler.

use alloc::vec::Vec;

/// One line of `/proc/self/maps`.
///
/// # Examples
///
/// ```
/// use of_core::patch::maps::Mapping;
///
/// let m = Mapping::parse(b"7f0000001000-7f0000003000 r-xp 00001000 08:01 42 /usr/lib/x.so").unwrap();
/// assert_eq!((m.start, m.end), (0x7f00_0000_1000, 0x7f00_0000_3000));
/// assert_eq!(m.prot, libc::PROT_READ | libc::PROT_EXEC);
/// assert!(m.private);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `PROT_READ | PROT_WRITE | PROT_EXEC` bits.
    pub prot: i32,
    /// `p` (private, copy-on-write) rather than `s` (shared).
    pub private: bool,
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |v, &c| {
        let d = (c as char).to_digit(16)?;
        Some(v << 4 | u64::from(d))
    })
}

impl Mapping {
    /// Parses one line of `/proc/self/maps`.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::patch::maps::Mapping;
    ///
    /// let shared = Mapping::parse(b"1000-2000 rwxs 00000000 00:05 7 /dev/shm/x").unwrap();
    /// assert!(!shared.private);
    /// assert!(Mapping::parse(b"not a mapping").is_none());
    /// ```
    pub fn parse(line: &[u8]) -> Option<Mapping> {
        let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
        let range = fields.next()?;
        let perms = fields.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let start = hex(&range[..dash])?;
        let end = hex(&range[dash + 1..])?;
        if perms.len() != 4 {
            return None;
        }
        let mut prot = 0;
        if perms[0] == b'r' {
            prot |= libc::PROT_READ;
        }
        if perms[1] == b'w' {
            prot |= libc::PROT_WRITE;
        }
        if perms[2] == b'x' {
            prot |= libc::PROT_EXEC;
        }
        Some(Mapping {
            start,
            end,
            prot,
            private: perms[3] == b'p',
        })
    }
}

/// Reads `/proc/self/maps` whole.
fn read_maps() -> Option<Vec<u8>> {
    // SAFETY: open with a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read into a buffer we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    Some(out)
}

/// The mapping that contains all of `addr..addr + len`, if one does.
///
/// # Examples
///
/// ```
/// use of_core::patch::maps::find;
///
/// // This function's own code: private and executable.
/// let here = find as usize as u64;
/// let m = find(here, 1).unwrap();
/// assert!(m.private && m.prot & libc::PROT_EXEC != 0);
/// assert!(find(0x10, 1).is_none()); // page 0 is never mapped
/// ```
pub fn find(addr: u64, len: u64) -> Option<Mapping> {
    let maps = read_maps()?;
    maps.split(|&b| b == b'\n')
        .filter_map(Mapping::parse)
        .find(|m| m.start <= addr && addr.saturating_add(len) <= m.end)
}

/// The first mapping whose path field is `name` (`[stack]`, `[heap]`), if there is one.
///
/// # Examples
///
/// ```
/// let stack = of_core::patch::maps::named(b"[stack]").unwrap();
/// assert!(stack.start < stack.end);
/// ```
pub fn named(name: &[u8]) -> Option<Mapping> {
    let maps = read_maps()?;
    maps.split(|&b| b == b'\n')
        .find(|l| l.ends_with(name) && l.len() > name.len() && l[l.len() - name.len() - 1] == b' ')
        .and_then(Mapping::parse)
}
