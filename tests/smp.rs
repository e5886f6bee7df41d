//! SMP boots: every CPU online under BIOS and UEFI at the edges of the supported range, the TLB
//! shootdown test failing when the shootdown is off, and a fault during AP bring-up.

mod common;

use common::{boot_smp, expect_line, expect_status};
use memkernel::Status;

/// Boots the demo on `cpus` CPUs and checks one line per CPU, the summary and the pagesets.
fn all_cpus_online(memory: &str, uefi: bool, cpus: u32) {
    let what = format!("{cpus} CPUs, {memory}, {}", if uefi { "UEFI" } else { "BIOS" });
    let out = boot_smp("", memory, uefi, cpus);
    expect_status(&out, Status::Success, &what);
    expect_line(&out, "smp: CPU 0 is up (APIC id 0, boot CPU)", &what);
    for cpu in 1..cpus {
        expect_line(&out, &format!("smp: CPU {cpu} is up (APIC id {cpu})\n"), &what);
    }
    let plural = if cpus == 1 { "" } else { "s" };
    expect_line(&out, &format!("smp: Brought up 1 node, {cpus} CPU{plural}\n"), &what);
    // The trampoline goes back to the page allocator once every AP is up (Linux's message).
    expect_line(&out, "smp: Brought up 1 node", &what);
    let freed = out.serial.find("Freeing AP trampoline memory: 16K").expect("trampoline given back");
    assert!(freed > out.serial.find("smp: Brought up").unwrap(), "{what}: freed before bring-up ended");
    // zoneinfo: pagesets for exactly the online CPUs, in every populated zone.
    let zoneinfo = memkernel::procfs::block(&out.serial, "zoneinfo").expect("zoneinfo block");
    let populated = zoneinfo.matches("\n  pagesets").count() as u32;
    assert!(populated > 0, "{what}: no populated zone:\n{zoneinfo}");
    assert_eq!(zoneinfo.matches("\n    cpu: ").count() as u32, populated * cpus, "{what}:\n{zoneinfo}");
    assert!(!zoneinfo.contains(&format!("\n    cpu: {cpus}\n")), "{what}: pageset of an offline CPU");
}

#[test]
fn eight_cpus_under_uefi() {
    all_cpus_online("1G", true, 8);
}

#[test]
fn sixteen_cpus_in_64m_under_bios() {
    all_cpus_online("64M", false, 16);
}

#[test]
fn two_cpus_with_zone_normal() {
    all_cpus_online("6G", false, 2);
}

/// The shootdown tests are real tests: with the remote flush off, CPU 1 reads freed memory,
/// through a 4 KiB and through a 2 MiB (vmalloc_huge) translation.
#[test]
fn shootdown_test_fails_without_the_shootdown() {
    let out = boot_smp("test=shoot tlb_shootdown=off", "1G", false, 4);
    expect_status(&out, Status::KernelFailure, "shootdown test with tlb_shootdown=off");
    expect_line(
        &out,
        "test mm::tests::smp::vfree_and_vunmap_ranges_shoot_down_every_cpus_tlb_at_the_purge ... FAILED",
        "",
    );
    expect_line(
        &out,
        "test mm::tests::smp::vmalloc_huge_vfree_shoots_down_the_2mib_translation_on_every_cpu ... FAILED",
        "",
    );
    expect_line(&out, "a stale TLB entry", "failure reason");
    let on = boot_smp("test=shoot", "1G", false, 4);
    expect_status(&on, Status::Success, "shootdown test");
    expect_line(&on, ", 0 stale reads", "shootdown test");
    expect_line(&on, "huge shootdown test: 40 rounds", "huge shootdown test");
}

#[test]
fn a_fault_during_ap_bring_up_is_reported_with_the_cpu() {
    let out = boot_smp("fault=ap_bringup", "1G", false, 2);
    expect_status(&out, Status::KernelFailure, "fault=ap_bringup");
    expect_line(&out, "[FAULT] EXCEPTION: PAGE FAULT (#PF, vector 14) on CPU 1", "fault=ap_bringup");
    expect_line(&out, "faulting address (CR2): 0x0000000000000000 = null page", "fault=ap_bringup");
}

/// The SMP issue's plain random mix at its full size: 1M operations on each of 4 CPUs
/// (kmalloc/kzalloc/krealloc/kfree, pages of orders 0..4, vmalloc/vfree, a test cache), objects
/// handed to other CPUs and freed there, fill patterns checked before every free, and every
/// zone's free pages and every cache's objects back exactly at the end (the test asserts it).
/// The timer-interrupt variant at 1M per CPU is the soak (`tests/soak.rs`).
#[test]
fn random_mix_of_1m_operations_per_cpu_on_4_cpus_returns_to_the_starting_figures() {
    let out = boot_smp("test=random_mix_on_every_cpu_with_cross stress_ops=1000000", "1G", false, 4);
    expect_status(&out, Status::Success, "1M-operation mix on 4 CPUs");
    expect_line(&out, "smp mix: 4 CPUs x 1000000 ops in ", "the mix ran at full size");
    expect_line(&out, " GFP_ATOMIC ops in timer interrupts, 0 allocations refused", "nothing refused");
    expect_line(
        &out,
        "test mm::tests::smp::random_mix_on_every_cpu_with_cross_cpu_frees_returns_to_the_starting_figures ... ok",
        "the test passed",
    );
    let handed: u64 = out
        .serial
        .lines()
        .find_map(|l| l.split(" objects handed across CPUs").next()?.rsplit(", ").next()?.parse().ok())
        .expect("the handed-over count");
    assert!(handed > 100_000, "few objects crossed CPUs ({handed}):\n{}", out.serial);
}
