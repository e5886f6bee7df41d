//! The interactive console (`console` on the command line; `cargo run` on a terminal): a short
//! summary of what booted, then a `mm> ` prompt on the serial port, where the allocators can be
//! asked questions with Linux's names and the API's rules (`help` lists the commands).
//!
//! Input is interrupt-driven (`arch::serial`: COM1's IRQ 4 through the PIC fills a ring), read
//! by the line editor ([`line`]); Ctrl-C arriving while a command runs is seen by the command
//! (`stress` polls it) and stops it. Everything the console hands out is tracked
//! ([`session::Session`]) so that frees can be told apart from attempts to free the kernel's own
//! memory, and `exit` lists what was left allocated.

mod args;
mod commands;
mod fault;
mod line;
mod session;
mod tests;

use crate::arch::serial;
use crate::log::Console;
use crate::mm::memory_map::Size;
use crate::{kprint, kprintln};

pub const PROMPT: &str = "mm> ";

/// Runs the console until `exit` (or Ctrl-D on an empty line); QEMU then exits with the
/// kernel's status.
pub fn run() -> ! {
    serial::enable_input();
    print_summary();
    kprintln!("type `help` for the commands, `exit` to leave; Ctrl-C stops a running command");
    let mut session = session::Session::new();
    let mut editor = line::LineEditor::new();
    loop {
        kprint!("{PROMPT}");
        editor.clear();
        loop {
            match editor.feed(serial::read_byte(), &mut Console) {
                line::Event::Pending => continue,
                line::Event::Line => {
                    if let commands::Flow::Exit = commands::run(&mut session, editor.line()) {
                        session.exit();
                    }
                }
                line::Event::Interrupt => {}
                line::Event::Eof => {
                    kprintln!("exit");
                    session.exit();
                }
            }
            break;
        }
    }
}

/// What booted, in a few lines: the firmware map's totals, the zones, one line per allocator.
fn print_summary() {
    let node = crate::mm::node();
    let (usable, boot, firmware) = crate::mm::firmware_map().totals();
    let reserved = crate::mm::boot_reservations();
    kprintln!(
        "memkernel: {} CPU{}, RAM {} ({} usable, {} bootloader; firmware reserves {}), memblock reserved {}",
        ::mm::num_online_cpus(),
        if ::mm::num_online_cpus() == 1 { "" } else { "s" },
        Size(usable + boot),
        Size(usable),
        Size(boot),
        Size(firmware),
        Size(reserved.bytes)
    );
    kprint!("zones:   ");
    for (i, z) in node.zones().iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        if z.managed_pages() == 0 {
            kprint!("{sep}{} empty", z.name());
        } else {
            kprint!("{sep}{} {} ({} pages)", z.name(), Size(z.managed_pages() << 12), z.managed_pages());
        }
    }
    kprintln!("; min_free_kbytes {}", node.min_free_kbytes());
    let t = node.totals();
    kprintln!(
        "buddy:   {} managed, {} free in blocks of order 0..10, {} on per-CPU lists",
        Size(t.managed_pages << 12),
        Size(t.free_pages << 12),
        Size(t.pcp_pages << 12)
    );
    let mut caches = 0;
    crate::mm::slab::slab().for_each_cache(|_| caches += 1);
    kprintln!(
        "slab:    {caches} caches (kmalloc-8 .. kmalloc-8k, dma-kmalloc-*; kmalloc-large above 8 KiB), {} in slabs",
        Size(crate::mm::slab::slab().totals().pages << 12)
    );
    let v = crate::mm::vmalloc::counts();
    kprintln!(
        "vmalloc: [{:#x}, {:#x}) {}, {} areas, {} of page tables",
        crate::mm::layout::VMALLOC_START,
        crate::mm::layout::VMALLOC_END,
        Size(crate::mm::layout::VMALLOC_END - crate::mm::layout::VMALLOC_START),
        v.nr_areas,
        Size((v.pagetable_pages as u64) << 12)
    );
}
