//! GFP_ATOMIC work in every CPU's timer interrupt while the stress workload runs (the SMP tests
//! and the soak): each tick replaces two objects the CPU holds, a kmalloc object or an order-0
//! page, allocated with `GFP_ATOMIC` and filled and checked like the workload's own.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use ::mm::{GfpFlags, NR_CPUS};

use super::{fill, pack, release, Kind, P};
use crate::arch::apic;
use crate::mm::page_alloc::{alloc_pages, phys_to_virt};
use crate::mm::slab::kmalloc;

/// Timer rate of the work, per CPU.
const HZ: u32 = 2000;

const IRQ_HELD: usize = 8;
static IRQ_SLOTS: [[AtomicU64; IRQ_HELD]; NR_CPUS] =
    [const { [const { AtomicU64::new(0) }; IRQ_HELD] }; NR_CPUS];
static IRQ_RUNS: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(0) }; NR_CPUS];
static IRQ_OPS: AtomicU64 = AtomicU64::new(0);

/// Per tick: replace two held objects of this CPU (kmalloc or an order-0 page, GFP_ATOMIC).
fn atomic_work() {
    let cpu = crate::arch::percpu::cpu_id() as usize;
    let run = IRQ_RUNS[cpu].fetch_add(1, Relaxed);
    for k in 0..2 {
        let slot = &IRQ_SLOTS[cpu][(run * 2 + k) % IRQ_HELD];
        let old = slot.swap(0, Relaxed);
        if old != 0 {
            release(old);
        }
        let v = if (run + k).is_multiple_of(3) {
            alloc_pages(GfpFlags::GFP_ATOMIC, 0).ok().map(|f| {
                let a = phys_to_virt(f.start_address()).as_u64();
                fill(a, P);
                pack(Kind::Pages, 0, a)
            })
        } else {
            let size = 8 * (1 + (run % 64) as u64);
            kmalloc(size as usize, GfpFlags::GFP_ATOMIC).ok().map(|p| {
                fill(p.as_ptr() as u64, size as usize);
                pack(Kind::Kmalloc, size / 8, p.as_ptr() as u64)
            })
        };
        slot.store(v.unwrap_or(0), Relaxed);
        IRQ_OPS.fetch_add(2, Relaxed);
    }
}

/// Starts the work on every online CPU (their local APIC timers).
pub fn start() {
    IRQ_OPS.store(0, SeqCst);
    crate::arch::interrupts::set_timer_handler(Some(atomic_work));
    crate::arch::smp_call::on_each_cpu(&|| apic::start_timer(HZ)).expect("process context, interrupts on");
}

/// Stops every CPU's timer, frees what the handlers held, returns the operations they did.
pub fn stop() -> u64 {
    crate::arch::smp_call::on_each_cpu(&apic::stop_timer).expect("process context, interrupts on");
    crate::arch::interrupts::set_timer_handler(None);
    for cpu in IRQ_SLOTS.iter() {
        for s in cpu {
            let v = s.swap(0, SeqCst);
            if v != 0 {
                release(v);
            }
        }
    }
    IRQ_OPS.load(SeqCst)
}
