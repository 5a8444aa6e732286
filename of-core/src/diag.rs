//! Async-signal-safe diagnostics: a fixed buffer formatted by hand and written with write(2).

use core::fmt;

/// A fixed-capacity line buffer (no allocation). Text past the capacity is dropped.
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Line {
    /// Appends a string.
    pub fn push_str(&mut self, s: &str) {
        for &b in s.as_bytes() {
            self.push_byte(b);
        }
    }

    /// Appends one byte.
    pub fn push_byte(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    /// Appends `v` as `0x…` lowercase hexadecimal without leading zeros.
    pub fn push_hex(&mut self, v: u64) {
        self.push_str("0x");
        let digits = if v == 0 {
            1
        } else {
            16 - (v.leading_zeros() / 4) as usize
        };
        for i in (0..digits).rev() {
            self.push_byte(b"0123456789abcdef"[((v >> (4 * i)) & 15) as usize]);
        }
    }

    /// Appends `v` in decimal.
    pub fn push_dec(&mut self, v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        let mut v = v;
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &b in &tmp[i..] {
            self.push_byte(b);
        }
    }

    /// Appends bytes as two-digit hex pairs separated by spaces.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if i > 0 {
                self.push_byte(b' ');
            }
            self.push_byte(b"0123456789abcdef"[(b >> 4) as usize]);
            self.push_byte(b"0123456789abcdef"[(b & 15) as usize]);
        }
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line (with a trailing newline) to standard error with write(2), retrying on
    /// EINTR and partial writes.
    pub fn emit(&mut self) {
        if self.as_bytes().last() != Some(&b'\n') {
            self.push_byte(b'\n');
        }
        write_stderr(self.as_bytes());
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Writes `bytes` to file descriptor 2 with write(2) (async-signal-safe, POSIX.1-2017 §2.4.3).
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live byte slice.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            // SAFETY: reading errno through libc's thread-local accessor is async-signal-safe.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        if n == 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}
