//! The cost of heap auto-initialisation (`init_on_alloc=1`, `init_on_free=1`, Linux's boot
//! parameters, off by default): kmalloc(64) + kfree with 100 live objects (LIFO, the loop
//! subtracted) and the order-0 page pair, with each switch on in turn, beside the default.

use ::mm::GfpFlags;

use super::slab::{lifo_pair_64, ORDER0_ITERS};
use super::{emit, measure, LinuxCol};
use crate::kprintln;
use crate::mm::page_alloc::{__free_pages, alloc_pages};
use crate::mm::set_auto_init;

pub fn run(tpk: u64) {
    kprintln!();
    kprintln!("== heap auto-initialisation (init_on_alloc= / init_on_free=) ==");
    kprintln!("  setting          kmalloc(64)+kfree   order-0 page pair   Linux 6.1 kmalloc(64)");
    for (name, on_alloc, on_free) in
        [("off", false, false), ("init_on_alloc", true, false), ("init_on_free", false, true)]
    {
        set_auto_init(on_alloc, on_free);
        let kmalloc = lifo_pair_64(tpk);
        let pages = measure(tpk, ORDER0_ITERS, || {
            let frame = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("bench allocation");
            __free_pages(frame, 0).expect("bench free");
        });
        set_auto_init(false, false);
        if on_alloc || on_free {
            emit(format_args!("{name}.kmalloc.64.100.lifo"), kmalloc);
            emit(format_args!("{name}.pages.order0.pair"), pages);
        }
        let key = if name == "off" {
            alloc::string::String::from("kmalloc.64.100.lifo")
        } else {
            alloc::format!("{name}.kmalloc.64.100.lifo")
        };
        kprintln!("  {name:<15}  {kmalloc:>19}   {pages:>17}   {:>21}", LinuxCol(&key));
    }
}
