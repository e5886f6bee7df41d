//! `kmem_cache_create` with arbitrary arguments: every value is either refused with
//! `InvalidCache` or gives a cache whose objects have the size and alignment asked for. No value
//! reaches a panic, an overflow or a truncation (the robustness issue: `1 << 32` as an alignment
//! used to narrow to 0 and be accepted as 8).

use proptest::prelude::*;

use crate::gfp::GfpFlags;
use crate::slab::tests::prov::TestProvider;
use crate::slab::tests::SEED;
use crate::slab::*;

const PAGES: usize = if cfg!(miri) { 1024 } else { 4096 };

fn check(slab: &SlabAllocator<'_, TestProvider>, size: usize, align: usize, flags: SlabFlags) {
    match slab.kmem_cache_create("args", size, align, flags, None) {
        Ok(cache) => {
            assert!(size > 0 && size <= layout::MAX_OBJECT_SIZE as usize, "size {size} accepted");
            assert!(align == 0 || align.is_power_of_two(), "align {align} accepted");
            assert!(cache.object_size() >= size);
            match cache.alloc(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN) {
                Ok(obj) => {
                    // Aligned within the emulated RAM, whose blocks are naturally aligned from
                    // its first page (the host buffer itself is only page aligned; in the kernel,
                    // buddy blocks are naturally aligned physically and the direct map base is
                    // aligned far beyond any slab).
                    let phys = crate::page::PageProvider::direct_map(slab.provider()).phys(obj.as_ptr());
                    let off = phys.as_u64() - crate::slab::tests::prov::FIRST_PFN * crate::PAGE_SIZE as u64;
                    assert_eq!(off % align.max(1) as u64, 0, "size {size} align {align}");
                    cache.free(obj).unwrap();
                }
                // Large objects may not fit the emulated RAM: a clean failure.
                Err(e) => assert!(matches!(e, crate::AllocError::OutOfMemory { .. }), "{e:?}"),
            }
            cache.destroy().map_err(|(_, e)| e).unwrap();
        }
        Err(SlabError::InvalidCache { .. }) => {}
        Err(e) => panic!("size {size} align {align} flags {flags:?}: unexpected error {e:?}"),
    }
}

#[test]
fn edge_values_are_refused_or_honoured() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let max = layout::MAX_OBJECT_SIZE as usize;
    let sizes = [0, 1, 7, 8, 4095, 4096, max - 1, max, max + 1, u32::MAX as usize, usize::MAX];
    let aligns = [0, 1, 3, 8, 64, 4096, 1 << 21, max, max * 2, 1 << 31, 1 << 32, 1 << 63, usize::MAX];
    for size in sizes {
        for align in aligns {
            // Under Miri one flag set (the interpreter is slow; the arithmetic is the same).
            let flags_list: &[SlabFlags] = if cfg!(miri) {
                &[SlabFlags::DEBUG]
            } else {
                &[SlabFlags::empty(), SlabFlags::SLAB_HWCACHE_ALIGN, SlabFlags::DEBUG]
            };
            for &flags in flags_list {
                check(&slab, size, align, flags);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_arguments_never_panic(
        size in prop_oneof![0usize..100_000, any::<usize>()],
        align_shift in 0u32..64,
        odd in any::<bool>(),
        bits in any::<u32>(),
    ) {
        let prov = TestProvider::new(PAGES);
        let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
        let align = (1usize << align_shift) + odd as usize * 3;
        check(&slab, size, align, SlabFlags::from_bits_truncate(bits));
    }
}
