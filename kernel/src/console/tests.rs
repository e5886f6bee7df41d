//! In-kernel tests of the console's line editor (the host tests drive the whole console through
//! QEMU's serial port: `tests/console.rs`).

use alloc::string::String;

use super::line::{Event, LineEditor, HISTORY, MAX_LINE};

/// Feeds `bytes`; returns the events other than `Pending`, the last line and the echo.
fn feed(ed: &mut LineEditor, bytes: &[u8]) -> (alloc::vec::Vec<(Event, String)>, String) {
    let mut echo = String::new();
    let mut events = alloc::vec::Vec::new();
    for &b in bytes {
        let e = ed.feed(b, &mut echo);
        if e != Event::Pending {
            events.push((e, String::from(ed.line())));
            ed.clear();
        }
    }
    (events, echo)
}

crate::ktest!(
    fn backspace_erases_and_enter_submits_with_cr_lf_or_both() {
        let mut ed = LineEditor::new();
        let (ev, echo) = feed(&mut ed, b"kmallox\x7fc 100\r");
        assert_eq!(ev, [(Event::Line, String::from("kmalloc 100"))]);
        assert_eq!(echo, "kmallox\x08 \x08c 100\n", "erase with BS space BS, newline on Enter");
        // CR LF is one Enter; LF alone is one; BS (0x08) erases like DEL; backspace on an empty
        // line does nothing.
        let (ev, _) = feed(&mut ed, b"\x08\x08ab\x08c\r\nd\n");
        assert_eq!(ev, [(Event::Line, String::from("ac")), (Event::Line, String::from("d"))]);
    }
);

crate::ktest!(
    fn up_and_down_walk_the_history_and_give_the_draft_back() {
        let mut ed = LineEditor::new();
        feed(&mut ed, b"one\rtwo\rtwo\r  \r");
        // Up twice: "two", then "one" (the repeated "two" and the blank line were not kept).
        let (ev, _) = feed(&mut ed, b"dr\x1b[A\x1b[A\r");
        assert_eq!(ev, [(Event::Line, String::from("one"))]);
        // Up past the oldest rings the bell; Down past the newest gives the draft back.
        let (ev, echo) = feed(&mut ed, b"x\x1b[A\x1b[B\x1bOB\r");
        assert_eq!(ev, [(Event::Line, String::from("x"))], "echo {echo:?}");
        assert!(echo.contains('\x07'), "Down beyond the draft rings the bell: {echo:?}");
        // Left/right and other sequences are consumed, not inserted.
        let (ev, _) = feed(&mut ed, b"a\x1b[D\x1b[1;5Cb\r");
        assert_eq!(ev, [(Event::Line, String::from("ab"))]);
    }
);

crate::ktest!(
    fn ctrl_c_cancels_ctrl_u_erases_ctrl_d_ends_only_an_empty_line() {
        let mut ed = LineEditor::new();
        let (ev, echo) = feed(&mut ed, b"stress 100\x03");
        assert_eq!(ev, [(Event::Interrupt, String::new())]);
        assert!(echo.ends_with("^C\n"));
        let (ev, echo) = feed(&mut ed, b"abc\x15xy\x04\r\x04");
        assert_eq!(ev, [(Event::Line, String::from("xy")), (Event::Eof, String::new())]);
        assert_eq!(
            echo, "abc\x08 \x08\x08 \x08\x08 \x08xy\n",
            "Ctrl-U erases all three, Ctrl-D echoes nothing"
        );
    }
);

crate::ktest!(
    fn long_lines_stop_at_the_limit_and_history_keeps_the_newest() {
        let mut ed = LineEditor::new();
        let long = [b'a'; MAX_LINE + 5];
        let (_, echo) = feed(&mut ed, &long);
        assert_eq!(echo.matches('\x07').count(), 5, "one bell per refused character");
        let (ev, _) = feed(&mut ed, b"\r");
        assert_eq!(ev[0].1.len(), MAX_LINE);
        for i in 0..HISTORY + 3 {
            let line = alloc::format!("cmd{i}\r");
            feed(&mut ed, line.as_bytes());
        }
        let mut up = alloc::vec::Vec::new();
        up.extend(core::iter::repeat_n(b"\x1b[A".as_slice(), HISTORY + 2).flatten());
        up.push(b'\r');
        let (ev, echo) = feed(&mut ed, &up);
        assert_eq!(
            ev,
            [(Event::Line, alloc::format!("cmd{}", 3))],
            "the oldest kept of {} lines",
            HISTORY + 3
        );
        assert_eq!(echo.matches('\x07').count(), 2, "two steps beyond the oldest");
    }
);
