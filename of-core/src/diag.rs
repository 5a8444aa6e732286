//! Async-signal-safe diagnostics: a fixed buffer formatted by hand and written with write(2).

use core::fmt;

/// A fixed-capacity line buffer (no allocation). Text past the capacity is dropped.
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use of_core::diag::Line;
///
/// let mut line = Line::default();
/// line.push_str("of: ");
/// line.push_dec(8);
/// line.push_str("-byte access at ");
/// line.push_hex(0xA0);
/// write!(line, " ({} bytes: ", 2).unwrap();
/// line.push_bytes(&[0xDD, 0x04]);
/// line.push_byte(b')');
/// assert_eq!(line.as_bytes(), b"of: 8-byte access at 0xa0 (2 bytes: dd 04)");
///
/// // Text past 512 bytes is dropped.
/// let mut long = Line::default();
/// for _ in 0..100 {
///     long.push_str("0123456789");
/// }
/// assert_eq!(long.as_bytes().len(), 512);
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// line.push_str("cannot ");
    /// line.push_str("emulate");
    /// assert_eq!(line.as_bytes(), b"cannot emulate");
    /// ```
    pub fn push_str(&mut self, s: &str) {
        for &b in s.as_bytes() {
            self.push_byte(b);
        }
    }

    /// Appends one byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// line.push_byte(b'`');
    /// line.push_byte(b'x');
    /// line.push_byte(b'`');
    /// assert_eq!(line.as_bytes(), b"`x`");
    /// ```
    pub fn push_byte(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    /// Appends `v` as `0x…` lowercase hexadecimal without leading zeros.
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// for v in [0, 0xA0, 0x55d0_c0a0_1234, u64::MAX] {
    ///     line.push_hex(v);
    ///     line.push_byte(b' ');
    /// }
    /// assert_eq!(line.as_bytes(), b"0x0 0xa0 0x55d0c0a01234 0xffffffffffffffff ");
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// for v in [0, 16, u64::MAX] {
    ///     line.push_dec(v);
    ///     line.push_byte(b' ');
    /// }
    /// assert_eq!(line.as_bytes(), b"0 16 18446744073709551615 ");
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// line.push_bytes(&[0x48, 0x83, 0x04, 0x25, 0x0A]);
    /// assert_eq!(line.as_bytes(), b"48 83 04 25 0a");
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// assert!(line.as_bytes().is_empty());
    /// line.push_str("x");
    /// assert_eq!(line.as_bytes(), b"x");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line (with a trailing newline) to standard error with write(2), retrying on
    /// EINTR and partial writes.
    ///
    /// # Examples
    ///
    /// (`capture`, hidden, runs a closure with standard error redirected to a pipe and
    /// returns what it wrote.)
    ///
    /// ```
    /// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
    /// # fn capture(f: impl FnOnce()) -> String {
    /// #     let mut fds = [0; 2];
    /// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
    /// #     // shorter than a pipe's buffer.
    /// #     unsafe {
    /// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
    /// #         let saved = libc::dup(2);
    /// #         libc::dup2(fds[1], 2);
    /// #         f();
    /// #         libc::dup2(saved, 2);
    /// #         libc::close(saved);
    /// #         libc::close(fds[1]);
    /// #         let mut buf = [0u8; 2048];
    /// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
    /// #         libc::close(fds[0]);
    /// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
    /// #     }
    /// # }
    /// use of_core::diag::Line;
    ///
    /// let mut line = Line::default();
    /// line.push_str("of: hello");
    /// assert_eq!(capture(|| line.emit()), "of: hello\n");
    /// // A line that already ends in a newline gets no second one.
    /// let mut line = Line::default();
    /// line.push_str("done\n");
    /// assert_eq!(capture(|| line.emit()), "done\n");
    /// ```
    pub fn emit(&mut self) {
        if self.as_bytes().last() != Some(&b'\n') {
            self.push_byte(b'\n');
        }
        write_stderr(self.as_bytes());
    }
}

impl Line {
    /// Appends `instr` as the diagnostics print it (iced-x86's MASM syntax, `0x` hex), or
    /// `(instruction)` if the formatter is busy on another thread (async-signal-safe).
    ///
    /// # Examples
    ///
    /// ```
    /// use of_core::decode::decode;
    /// use of_core::diag::Line;
    ///
    /// of_core::signal::install().unwrap(); // prepares the formatter
    /// let (i, _) = decode(&[0x48, 0x83, 0x04, 0x25, 0x40, 0x00, 0x00, 0x00, 0x01], 0).unwrap();
    /// let mut l = Line::default();
    /// l.push_instruction(&i);
    /// assert_eq!(l.as_bytes(), b"add qword ptr [0x40], 1");
    /// ```
    pub fn push_instruction(&mut self, instr: &iced_x86::Instruction) {
        crate::signal::report::push_disassembly(self, instr);
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Writes `bytes` to file descriptor 2 with write(2) (async-signal-safe, POSIX.1-2017 §2.4.3).
///
/// # Examples
///
/// (`capture`, hidden, runs a closure with standard error redirected to a pipe and returns
/// what it wrote.)
///
/// ```
/// # /// Runs `f` with standard error redirected to a pipe and returns what it wrote.
/// # fn capture(f: impl FnOnce()) -> String {
/// #     let mut fds = [0; 2];
/// #     // SAFETY: pipe/dup/dup2/read/close on descriptors this function owns; the text is
/// #     // shorter than a pipe's buffer.
/// #     unsafe {
/// #         assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
/// #         let saved = libc::dup(2);
/// #         libc::dup2(fds[1], 2);
/// #         f();
/// #         libc::dup2(saved, 2);
/// #         libc::close(saved);
/// #         libc::close(fds[1]);
/// #         let mut buf = [0u8; 2048];
/// #         let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
/// #         libc::close(fds[0]);
/// #         String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
/// #     }
/// # }
/// use of_core::diag::write_stderr;
///
/// assert_eq!(capture(|| write_stderr(b"of: one line\n")), "of: one line\n");
/// ```
pub fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes);
}

/// Writes all of `bytes` to file descriptor `fd` with write(2), retrying after EINTR and short
/// writes (async-signal-safe); gives up silently on any other error.
///
/// # Examples
///
/// ```
/// use of_core::diag::write_fd;
///
/// let mut fds = [0; 2];
/// // SAFETY: a pipe of our own, read back and closed.
/// unsafe { assert_eq!(libc::pipe(fds.as_mut_ptr()), 0) };
/// write_fd(fds[1], b"of: to a pipe\n");
/// let mut buf = [0u8; 64];
/// // SAFETY: reading from and closing our own pipe.
/// let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
/// unsafe { libc::close(fds[0]); libc::close(fds[1]) };
/// assert_eq!(&buf[..n as usize], b"of: to a pipe\n");
/// ```
pub fn write_fd(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live byte slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
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
