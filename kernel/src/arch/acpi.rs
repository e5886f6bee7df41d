//! ACPI tables: where the firmware describes the CPUs (MADT) and, next, the NUMA nodes (SRAT,
//! SLIT).
//!
//! Parsing is the `acpi` crate's (rust-osdev's, the parser Rust kernels share: checksums, RSDT vs
//! XSDT, the MADT's variable-length entries and their quirks are handled once, there). This file
//! only gives it physical memory through the direct map and turns tables into the kernel's own
//! plain data ([`MadtInfo`]), so nothing else depends on the crate's types.
//!
//! Layout for the next tables: every table is read the same way, [`tables`] opens the root table
//! from the RSDP the bootloader found, `find_table::<T>()` maps one table, a `read_*` function
//! copies what the kernel needs into a fixed-size struct. SRAT (`Signature::SRAT`: processor and
//! memory affinity, i.e. APIC id -> node and RAM range -> node) and SLIT (node distances) get a
//! `#[repr(C, packed)]` header type implementing `acpi::AcpiTable` and a `read_srat`/`read_slit`
//! beside [`read_madt`]; until then every CPU and all memory are node 0, as the boot log says.
//!
//! Everything here runs before the heap exists: no allocation, only the direct map.

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};
use mm::NR_CPUS;

/// Gives the `acpi` crate physical memory through the bootloader's direct map, which covers all
/// RAM and at least the first 4 GiB (where firmware puts its tables).
#[derive(Clone, Copy, Debug)]
pub struct DirectMapHandler {
    offset: u64,
}

impl AcpiHandler for DirectMapHandler {
    /// # Safety
    /// As the trait says: `phys` holds a valid `T` of at least `size` bytes (a firmware table);
    /// the direct map covers it.
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = (self.offset + phys as u64) as *mut T;
        let virt = NonNull::new(virt).expect("the direct map is in the upper half");
        // SAFETY: the range is already mapped (the direct map), so the "mapping" is the
        // translation itself; the caller (the crate) guarantees a valid `T` lies there.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {
        // The direct map stays; there is nothing to undo.
    }
}

/// Where the root table is, recorded at boot.
#[derive(Clone, Copy, Debug)]
struct Rsdp {
    phys: u64,
    direct_map_offset: u64,
}

static RSDP: spin::Once<Rsdp> = spin::Once::new();

/// Why the CPU topology could not be read.
#[derive(Debug)]
pub enum AcpiReadError {
    /// The bootloader found no RSDP (legacy firmware without ACPI).
    NoRsdp,
    /// The crate refused a table (bad checksum, missing MADT, ...).
    Table(AcpiError),
}

impl core::fmt::Display for AcpiReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiReadError::NoRsdp => write!(f, "the bootloader passed no ACPI RSDP"),
            AcpiReadError::Table(e) => write!(f, "ACPI table error: {e:?}"),
        }
    }
}

/// Records the RSDP address the bootloader passed. Called once, early in `arch::init`.
pub fn init(rsdp_phys: Option<u64>, direct_map_offset: u64) {
    if let Some(phys) = rsdp_phys {
        RSDP.call_once(|| Rsdp { phys, direct_map_offset });
    }
}

/// Opens the root table (RSDT or XSDT) for reading tables from it.
pub fn tables() -> Result<AcpiTables<DirectMapHandler>, AcpiReadError> {
    let rsdp = RSDP.get().ok_or(AcpiReadError::NoRsdp)?;
    let handler = DirectMapHandler { offset: rsdp.direct_map_offset };
    // SAFETY: `rsdp.phys` is the RSDP address the bootloader found in firmware memory (BIOS
    // area scan or the UEFI configuration table), and the handler reaches it through the
    // direct map.
    unsafe { AcpiTables::from_rsdp(handler, rsdp.phys as usize) }.map_err(AcpiReadError::Table)
}

/// One processor entry of the MADT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MadtCpu {
    /// The local APIC id (x2APIC id for x2APIC entries), what INIT/SIPI are addressed to.
    pub apic_id: u32,
    /// The ACPI processor UID.
    pub acpi_uid: u32,
}

/// What the MADT says about the CPUs.
#[derive(Clone, Copy, Debug)]
pub struct MadtInfo {
    /// Physical address of the local APIC registers (xAPIC MMIO), after any 64-bit override.
    pub lapic_phys: u64,
    /// Enabled processors, in table order, the first `nr_cpus` of them.
    pub cpus: [MadtCpu; NR_CPUS],
    pub nr_cpus: usize,
    /// Enabled processors beyond [`NR_CPUS`], which stay offline.
    pub nr_ignored: usize,
    /// Processors marked neither enabled nor online-capable (absent sockets).
    pub nr_disabled: usize,
}

/// Reads the processor entries of the MADT (Linux's `acpi_parse_lapic`/`acpi_parse_x2apic`).
pub fn read_madt() -> Result<MadtInfo, AcpiReadError> {
    let tables = tables()?;
    let madt = tables.find_table::<Madt>().map_err(AcpiReadError::Table)?;
    let mut info = MadtInfo {
        lapic_phys: madt.get().local_apic_address as u64,
        cpus: [MadtCpu::default(); NR_CPUS],
        nr_cpus: 0,
        nr_ignored: 0,
        nr_disabled: 0,
    };
    let mut add = |apic_id: u32, acpi_uid: u32, flags: u32| {
        // Bit 0: enabled; bit 1: online capable (hot-pluggable, not started at boot).
        if flags & 1 == 0 {
            info.nr_disabled += 1;
        } else if info.nr_cpus == NR_CPUS {
            info.nr_ignored += 1;
        } else if !info.cpus[..info.nr_cpus].iter().any(|c| c.apic_id == apic_id) {
            info.cpus[info.nr_cpus] = MadtCpu { apic_id, acpi_uid };
            info.nr_cpus += 1;
        }
    };
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => add(e.apic_id as u32, e.processor_id as u32, e.flags),
            MadtEntry::LocalX2Apic(e) => add(e.x2apic_id, e.processor_uid, e.flags),
            MadtEntry::LocalApicAddressOverride(e) => info.lapic_phys = e.local_apic_address,
            _ => {}
        }
    }
    Ok(info)
}
