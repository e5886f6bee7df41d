//! In-kernel tests of SMP bring-up and cross-CPU calls. They hold at any CPU count; with one CPU
//! they check the boot CPU alone (the runner's `cargo test` boots the suite at 1 and 4 CPUs).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use mm::NR_CPUS;

use super::smp_call::{on_each_cpu, smp_call_function_many, smp_call_on_cpus, CpuMask, SmpCallError};
use super::{apic, gdt, percpu};

crate::ktest!(
    fn every_online_cpu_runs_with_its_own_per_cpu_block_and_apic_id() {
        let online = mm::num_online_cpus();
        assert_eq!(CpuMask::online().count(), online, "online mask vs num_online_cpus");
        assert_eq!(mm::nr_cpu_ids(), online, "every CPU the MADT lists came up (QEMU -smp N)");
        static SEEN_ID: [AtomicU32; NR_CPUS] = [const { AtomicU32::new(u32::MAX) }; NR_CPUS];
        static SEEN_GS: [AtomicU64; NR_CPUS] = [const { AtomicU64::new(0) }; NR_CPUS];
        static SEEN_APIC: [AtomicU32; NR_CPUS] = [const { AtomicU32::new(u32::MAX) }; NR_CPUS];
        smp_call_on_cpus(CpuMask::online(), &|cpu| {
            assert!(!super::in_interrupt(), "thread-context call counted as interrupt context");
            SEEN_ID[cpu].store(percpu::cpu_id(), SeqCst);
            SEEN_GS[cpu].store(x86_64::registers::model_specific::GsBase::read().as_u64(), SeqCst);
            SEEN_APIC[cpu].store(apic::id(), SeqCst);
        })
        .unwrap();
        for cpu in 0..online {
            assert_eq!(SEEN_ID[cpu].load(SeqCst), cpu as u32, "CPU {cpu} read another id through GS");
            assert_eq!(SEEN_GS[cpu].load(SeqCst), percpu::per_cpu(cpu) as *const _ as u64, "GS of CPU {cpu}");
            assert_eq!(SEEN_APIC[cpu].load(SeqCst), percpu::per_cpu(cpu).apic_id(), "APIC id of CPU {cpu}");
            let apic = SEEN_APIC[cpu].load(SeqCst);
            assert!(SEEN_APIC[..cpu].iter().all(|o| o.load(SeqCst) != apic), "two CPUs, one APIC");
        }
    }
);

crate::ktest!(
    fn each_cpu_loaded_its_own_tss_with_its_own_ist_stacks() {
        let online = mm::num_online_cpus();
        for cpu in 0..online {
            let tss = gdt::tss_of(cpu).unwrap_or_else(|| panic!("CPU {cpu} has no TSS"));
            for other in 0..cpu {
                let o = gdt::tss_of(other).unwrap();
                assert!(!core::ptr::eq(tss, o), "CPUs {cpu} and {other} share a TSS");
                let (mine, theirs) = (tss.interrupt_stack_table, o.interrupt_stack_table);
                for i in 0..3 {
                    assert_ne!(mine[i], theirs[i], "IST {i} shared by CPUs {cpu} and {other}");
                }
            }
        }
    }
);

crate::ktest!(
    fn smp_call_function_many_runs_in_interrupt_context_on_every_other_cpu_and_waits() {
        static RUNS: [AtomicU32; NR_CPUS] = [const { AtomicU32::new(0) }; NR_CPUS];
        static IN_IRQ: AtomicU32 = AtomicU32::new(0);
        for r in &RUNS {
            r.store(0, SeqCst);
        }
        IN_IRQ.store(0, SeqCst);
        for _ in 0..100 {
            smp_call_function_many(CpuMask::online(), &|| {
                RUNS[percpu::cpu_id() as usize].fetch_add(1, SeqCst);
                if super::in_interrupt() {
                    IN_IRQ.fetch_add(1, SeqCst);
                }
            })
            .unwrap();
        }
        let me = percpu::cpu_id() as usize;
        let online = mm::num_online_cpus();
        for (cpu, runs) in RUNS.iter().enumerate().take(online) {
            // Completion wait: every call has finished by the time the function returned.
            let expect = if cpu == me { 0 } else { 100 };
            assert_eq!(runs.load(SeqCst), expect, "CPU {cpu}");
        }
        assert_eq!(IN_IRQ.load(SeqCst), 100 * (online as u32 - 1), "ran outside interrupt context");
        let total = AtomicU32::new(0);
        on_each_cpu(&|| {
            total.fetch_add(1, SeqCst);
        })
        .unwrap();
        assert_eq!(total.load(SeqCst), online as u32, "on_each_cpu includes the caller");
    }
);

crate::ktest!(
    fn cross_cpu_calls_are_refused_with_interrupts_disabled() {
        // A caller with interrupts off may hold an IrqSpinLock a target spins on: refused, not hung.
        let r = x86_64::instructions::interrupts::without_interrupts(|| {
            (smp_call_function_many(CpuMask::online(), &|| {}), smp_call_on_cpus(CpuMask::online(), &|_| {}))
        });
        assert_eq!(r, (Err(SmpCallError::IrqsDisabled), Err(SmpCallError::IrqsDisabled)));
    }
);

crate::ktest!(
    fn local_apic_timer_ticks_on_every_cpu() {
        let online = mm::num_online_cpus();
        let before: [u64; NR_CPUS] = core::array::from_fn(apic::timer_ticks);
        on_each_cpu(&|| apic::start_timer(1000)).unwrap();
        let start = super::rdtsc();
        let deadline = start + 2000 * apic::tsc_per_ms();
        // At 1 kHz every CPU ticks within milliseconds; 2 s of slack for TCG on a busy host.
        while (0..online).any(|c| apic::timer_ticks(c) < before[c] + 5) && super::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        on_each_cpu(&apic::stop_timer).unwrap();
        for (cpu, &b) in before.iter().enumerate().take(online) {
            assert!(apic::timer_ticks(cpu) >= b + 5, "CPU {cpu}: {} LAPIC ticks", apic::timer_ticks(cpu) - b);
        }
    }
);

// ---- set_timer_handler waits for the handler it replaces ----

static SLOW_ENTERED: AtomicU64 = AtomicU64::new(0);
static SLOW_LEFT: AtomicU64 = AtomicU64::new(0);

/// A tick that stays in the handler for half a millisecond (half of each 1 kHz period).
fn slow_tick() {
    SLOW_ENTERED.fetch_add(1, SeqCst);
    let end = super::rdtsc() + apic::tsc_per_ms() / 2;
    while super::rdtsc() < end {
        core::hint::spin_loop();
    }
    SLOW_LEFT.fetch_add(1, SeqCst);
}

crate::ktest!(
    fn clearing_the_timer_handler_waits_for_every_cpu_still_running_it() {
        let online = mm::num_online_cpus();
        if online < 2 {
            crate::info!(
                "timer handler synchronisation test: needs 2 CPUs, {online} online; checked at --smp 4"
            );
            return;
        }
        SLOW_ENTERED.store(0, SeqCst);
        SLOW_LEFT.store(0, SeqCst);
        super::interrupts::set_timer_handler(Some(slow_tick));
        on_each_cpu(&|| apic::start_timer(1000)).unwrap();
        let deadline = super::rdtsc() + 2000 * apic::tsc_per_ms();
        while SLOW_ENTERED.load(SeqCst) < 8 * online as u64 && super::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        // The other CPUs are each in `slow_tick` half of the time: without the wait, one of
        // them is still in it here almost every run.
        super::interrupts::set_timer_handler(None);
        let (entered, left) = (SLOW_ENTERED.load(SeqCst), SLOW_LEFT.load(SeqCst));
        on_each_cpu(&apic::stop_timer).unwrap();
        assert!(entered >= 8 * online as u64, "only {entered} ticks reached the handler");
        assert_eq!(entered, left, "a CPU was still in the handler set_timer_handler(None) had replaced");
    }
);
