//! Making text that someone else wrote safe to print on a terminal.
//!
//! Everything a sender or a server controls (addresses, subjects, CC lists, attachment
//! names, message text, error messages quoting a server) can carry bytes that a
//! terminal obeys: escape sequences that set the window title, write the clipboard
//! (OSC 52), clear the screen or move the cursor (CSI), C0/C1 control characters, and
//! the Unicode bidirectional controls that make `exe.txt` display as `txt.exe`.
//! [`sanitize`] removes or replaces all of them. `cmtp` and `cmtpd mailbox list/show`
//! both print through it. JSON output needs none of this: JSON escapes control
//! characters itself, and stays exact. [`prompt_password`] asks for a password on the
//! terminal without echo (`cmtp` and `cmtpd user add` both use it).

/// What a piece of text may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One-line fields (addresses, subjects, names): every control character goes,
    /// line feeds and tabs included.
    Line,
    /// Message text: keeps line feeds and tabs. A carriage return never stays, since
    /// it lets a line overwrite what was printed before it.
    Text,
}

/// Shown in place of a control character, so that its presence stays visible.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Returns `s` safe to print on a terminal.
///
/// - Escape sequences are removed whole: CSI (`ESC [` … final byte, or 8-bit `0x9B`),
///   and the string sequences OSC, DCS, SOS, PM, APC (`ESC ]`, `ESC P`, `ESC X`,
///   `ESC ^`, `ESC _`, or their 8-bit forms) up to their terminator (BEL, `ESC \` or
///   8-bit ST) or the end of the text. Any other `ESC x` pair is removed too.
/// - Every other control character (C0, DEL, C1) becomes [`REPLACEMENT`], except line
///   feed and tab with [`Layout::Text`].
/// - The bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
///   U+2066–U+2069) and the line and paragraph separators (U+2028, U+2029) become
///   [`REPLACEMENT`].
///
/// Everything else, all printable Unicode included, is kept as is.
pub fn sanitize(s: &str, layout: Layout) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\n' | '\t' if layout == Layout::Text => out.push(c),
            '\u{1b}' => match it.next() {
                Some('[') => skip_csi(&mut it),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut it),
                // A two-character escape (ESC c resets the terminal, ESC 7 ...).
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut it),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut it),
            c if c.is_control() => out.push(REPLACEMENT),
            c if is_bidi_or_separator(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Bidirectional embeddings, overrides, isolates and marks reorder or disguise what
/// follows them; the Unicode line separators break lines where a field has none.
pub(crate) fn is_bidi_or_separator(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Skips a CSI's parameters and intermediates up to its final byte (0x40..=0x7E); a
/// character that cannot be part of a CSI ends it too (and is dropped with it).
fn skip_csi(it: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in it.by_ref() {
        if !('\u{20}'..='\u{3f}').contains(&c) {
            return;
        }
    }
}

/// Skips a control string up to BEL, ST (`ESC \` or 0x9C), or a lone ESC.
fn skip_string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = it.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if it.peek() == Some(&'\\') {
                    it.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// Restores the terminal's settings when dropped (also on an error or a panic).
struct EchoGuard {
    fd: std::os::fd::RawFd,
    saved: libc::termios,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        // SAFETY: `fd` is the open terminal the settings were read from.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Asks for a password on the controlling terminal (`/dev/tty`), with echo turned off
/// *before* the prompt is shown,
/// so a password typed the moment the prompt appears is never echoed (a prompt written
/// first, as rpassword does, leaves a window in which typed-ahead characters echo).
pub fn prompt_password(prompt: &str) -> std::io::Result<zeroize::Zeroizing<String>> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is open; tcgetattr fills `term` before it is read.
    if unsafe { libc::tcgetattr(fd, term.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful tcgetattr above.
    let saved = unsafe { term.assume_init() };
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // The Enter key still moves to the next line.
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: `fd` is open and `quiet` a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let _restore = EchoGuard { fd, saved };
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    // Byte by byte into a zeroized buffer: no unwiped copy of the password in a reader.
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    loop {
        match (&tty).read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = std::str::from_utf8(&line).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "password is not UTF-8")
    })?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> String {
        sanitize(s, Layout::Line)
    }

    #[test]
    fn osc_sequences_go_whole() {
        // Window title, ended by BEL and by ST.
        assert_eq!(line("a\x1b]0;pwned\x07b"), "ab");
        assert_eq!(line("a\x1b]2;pwned\x1b\\b"), "ab");
        // OSC 52: writes the clipboard.
        assert_eq!(line("x\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07y"), "xy");
        // Hyperlinks, and the 8-bit OSC with 8-bit ST.
        assert_eq!(line("\x1b]8;;http://x\x1b\\e\x1b]8;;\x1b\\"), "e");
        assert_eq!(line("x\u{9d}0;t\u{9c}z"), "xz");
        // Unterminated: everything after it goes, nothing leaks.
        assert_eq!(line("ok\x1b]0;never ends"), "ok");
    }

    #[test]
    fn csi_and_other_escapes_go() {
        assert_eq!(line("a\x1b[2Jb\x1b[Hc\x1b[1;31md\x1b[0m"), "abcd");
        assert_eq!(line("x\u{9b}2Jy"), "xy");
        assert_eq!(line("\x1bcreset"), "reset");
        assert_eq!(line("dcs\x1bPq#0;2;0;0;0\x1b\\done"), "dcsdone");
        assert_eq!(line("ok\x1b["), "ok");
        assert_eq!(line("ok\x1b"), "ok");
    }

    #[test]
    fn controls_are_replaced() {
        let r = REPLACEMENT;
        assert_eq!(line("a\rb\x08c\x7fd\0e"), format!("a{r}b{r}c{r}d{r}e"));
        // C1 controls that start no sequence.
        assert_eq!(line("a\u{85}b\u{9c}c"), format!("a{r}b{r}c"));
        assert_eq!(line("l1\nl2\t"), format!("l1{r}l2{r}"));
        assert_eq!(
            sanitize("l1\nl2\tt\r", Layout::Text),
            format!("l1\nl2\tt{r}")
        );
    }

    #[test]
    fn bidi_controls_are_replaced() {
        let r = REPLACEMENT;
        assert_eq!(line("abc\u{202e}txt.exe"), format!("abc{r}txt.exe"));
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
        ] {
            assert_eq!(
                line(&format!("a{c}b")),
                format!("a{r}b"),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn printable_text_is_kept() {
        for s in ["ünïcødé ✓", "日本語のメール", "a [b] ~c~ 100%", "emoji 🎉"] {
            assert_eq!(line(s), s);
            assert_eq!(sanitize(s, Layout::Text), s);
        }
    }
}
