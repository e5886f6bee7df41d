//! The console's line editor: what a terminal sends, byte by byte, turned into command lines,
//! with the echo a terminal in raw mode needs (QEMU puts the host terminal in raw mode, so every
//! visible change is the kernel's to draw).
//!
//! Keys: printable ASCII inserts at the end of the line; Backspace (DEL or BS) erases the last
//! character; Ctrl-U erases the line; Up/Down (`ESC [ A`/`B`, or `ESC O A`/`B`) walk the
//! history of the last [`HISTORY`] distinct lines; Enter (CR, LF or CR LF) submits; Ctrl-C
//! cancels the line; Ctrl-D on an empty line ends the session. Other control bytes and escape
//! sequences (cursor keys left/right, function keys) are consumed and ignored: editing happens
//! at the end of the line. No heap: the line and the history are fixed arrays.

use core::fmt::Write;

/// Longest command line; further characters are refused with a bell.
pub const MAX_LINE: usize = 200;
/// Lines the history keeps.
pub const HISTORY: usize = 32;

const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;
const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const BELL: &str = "\x07";

/// What a byte completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing yet.
    Pending,
    /// Enter: the line is ready ([`LineEditor::line`]).
    Line,
    /// Ctrl-C: the line was dropped.
    Interrupt,
    /// Ctrl-D on an empty line.
    Eof,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Esc,
    /// After `ESC [` (CSI): parameters until a final byte 0x40..0x7e.
    Csi,
    /// After `ESC O` (SS3): one final byte.
    Ss3,
}

pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
    history: [[u8; MAX_LINE]; HISTORY],
    history_len: [usize; HISTORY],
    /// Lines ever added; entry `i` lives in slot `i % HISTORY`.
    history_added: usize,
    /// While walking the history: how far back (1 = the newest line).
    back: usize,
    /// The line being typed when the walk started, given back by walking past the newest.
    draft: [u8; MAX_LINE],
    draft_len: usize,
    escape: Escape,
    /// The previous byte was CR: a following LF is the same Enter.
    after_cr: bool,
}

impl LineEditor {
    pub const fn new() -> LineEditor {
        LineEditor {
            buf: [0; MAX_LINE],
            len: 0,
            history: [[0; MAX_LINE]; HISTORY],
            history_len: [0; HISTORY],
            history_added: 0,
            back: 0,
            draft: [0; MAX_LINE],
            draft_len: 0,
            escape: Escape::None,
            after_cr: false,
        }
    }

    /// The line as typed (after [`Event::Line`]: the submitted line, until the next byte).
    pub fn line(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Takes one byte from the terminal; echoes what the terminal should show on `out`.
    pub fn feed(&mut self, b: u8, out: &mut dyn Write) -> Event {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Esc => {
                self.escape = match b {
                    b'[' => Escape::Csi,
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return Event::Pending;
            }
            Escape::Csi if !(0x40..=0x7e).contains(&b) => return Event::Pending,
            Escape::Csi | Escape::Ss3 => {
                self.escape = Escape::None;
                match b {
                    b'A' => self.history_older(out),
                    b'B' => self.history_newer(out),
                    _ => {}
                }
                return Event::Pending;
            }
            Escape::None => {}
        }
        match b {
            b'\r' => {
                self.after_cr = true;
                self.submit(out)
            }
            b'\n' if after_cr => Event::Pending,
            b'\n' => self.submit(out),
            BACKSPACE | DEL => {
                if self.len > 0 {
                    self.len -= 1;
                    let _ = out.write_str("\x08 \x08");
                }
                Event::Pending
            }
            CTRL_U => {
                self.erase(out);
                Event::Pending
            }
            CTRL_C => {
                let _ = out.write_str("^C\n");
                self.len = 0;
                self.back = 0;
                Event::Interrupt
            }
            // The caller says what it does (`exit`) on the prompt's line.
            CTRL_D if self.len == 0 => Event::Eof,
            ESC => {
                self.escape = Escape::Esc;
                Event::Pending
            }
            0x20..=0x7e => {
                if self.len == MAX_LINE {
                    let _ = out.write_str(BELL);
                } else {
                    self.buf[self.len] = b;
                    self.len += 1;
                    let _ = out.write_char(b as char);
                }
                Event::Pending
            }
            _ => Event::Pending,
        }
    }

    /// Prepares for the next line (after a submitted or cancelled one).
    pub fn clear(&mut self) {
        self.len = 0;
        self.back = 0;
    }

    fn submit(&mut self, out: &mut dyn Write) -> Event {
        let _ = out.write_str("\n");
        self.back = 0;
        let line = self.line();
        let start = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        let n = trimmed.len();
        let keep = n > 0 && self.history_entry(1) != Some(trimmed);
        if keep {
            let slot = self.history_added % HISTORY;
            self.history[slot][..n].copy_from_slice(&self.buf[start..start + n]);
            self.history_len[slot] = n;
            self.history_added += 1;
        }
        Event::Line
    }

    /// The history line `back` steps back (1 = newest), if kept.
    fn history_entry(&self, back: usize) -> Option<&str> {
        if back == 0 || back > self.history_added.min(HISTORY) {
            return None;
        }
        let slot = (self.history_added - back) % HISTORY;
        core::str::from_utf8(&self.history[slot][..self.history_len[slot]]).ok()
    }

    fn erase(&mut self, out: &mut dyn Write) {
        for _ in 0..self.len {
            let _ = out.write_str("\x08 \x08");
        }
        self.len = 0;
    }

    /// Replaces the line on screen and in the buffer with `bytes`.
    fn show(&mut self, bytes_from: Source, out: &mut dyn Write) {
        self.erase(out);
        let (src, len) = match bytes_from {
            Source::History(back) => {
                let slot = (self.history_added - back) % HISTORY;
                (self.history[slot], self.history_len[slot])
            }
            Source::Draft => (self.draft, self.draft_len),
        };
        self.buf[..len].copy_from_slice(&src[..len]);
        self.len = len;
        let _ = out.write_str(self.line());
    }

    fn history_older(&mut self, out: &mut dyn Write) {
        if self.history_entry(self.back + 1).is_none() {
            let _ = out.write_str(BELL);
            return;
        }
        if self.back == 0 {
            self.draft[..self.len].copy_from_slice(&self.buf[..self.len]);
            self.draft_len = self.len;
        }
        self.back += 1;
        self.show(Source::History(self.back), out);
    }

    fn history_newer(&mut self, out: &mut dyn Write) {
        match self.back {
            0 => {
                let _ = out.write_str(BELL);
            }
            1 => {
                self.back = 0;
                self.show(Source::Draft, out);
            }
            _ => {
                self.back -= 1;
                self.show(Source::History(self.back), out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Source {
    History(usize),
    Draft,
}
