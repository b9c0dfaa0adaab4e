//! A memory allocator for plugins: small blocks from free lists by size class.
//!
//! Why: a plugin allocates on every call and frees it all soon after. The host copies each list
//! and string argument into the guest through its `cabi_realloc`, the answer's lists and strings
//! are allocated by the plugin, and the post-return call frees them, so a rules call with four
//! header values makes a dozen allocations and as many frees. Rust's allocator for
//! `wasm32-unknown-unknown` is dlmalloc, which spends a few hundred instructions on each
//! allocation and its free (bins, chunk headers, coalescing): with the guide's rules the
//! apache-rules guest alone spent 5,400 of a proxied request's 71,500 instructions in it
//! (docs/performance.md).
//!
//! [`PluginAllocator`] serves every block of up to [`MAX_SMALL`] bytes (alignment up to 16) from
//! one free list per power-of-two size class: an allocation pops the head of its class's list, a
//! free pushes the block back, and an empty list is refilled by carving blocks from a 64 KiB chunk
//! taken from the system allocator. There are no headers and no coalescing, so a block freed in
//! one class is reused only by that class: the memory a class holds is its peak. Larger or more
//! aligned blocks go to the system allocator as before. Memory still grows only through the
//! system allocator (`memory.grow`), so the host's memory limit applies unchanged, and an
//! allocation that cannot be served still ends the call with a trap.
//!
//! Opt in from a plugin crate (the built-in plugins do; `fulcrum plugin new` writes it):
//!
//! ```ignore
//! #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
//! #[global_allocator]
//! static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();
//! ```
//!
//! It is for single-threaded Wasm only: without the `atomics` feature a Wasm module has one
//! thread, which is what makes the unsynchronised free lists sound. Elsewhere the type exists (for
//! tests) but cannot be a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest size class, in bytes; also the alignment every small block has.
const MIN_BLOCK: usize = 16;
/// The number of size classes: 16, 32, ... 2,048 bytes.
const CLASSES: usize = 8;
/// The largest block served from the free lists, in bytes.
pub const MAX_SMALL: usize = MIN_BLOCK << (CLASSES - 1);
/// What one refill takes from the system allocator.
const CHUNK: usize = 64 * 1024;

/// Size-class free lists in front of the system allocator. See the module documentation.
pub struct PluginAllocator {
    state: UnsafeCell<State>,
}

struct State {
    /// The first free block of each class; each free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The part of the current chunk not carved yet.
    next: *mut u8,
    end: *mut u8,
    /// How many chunks were taken from the system allocator (what the memory tests watch).
    chunks: usize,
}

// SAFETY: compiled only for Wasm without threads (no `atomics` feature): there is one thread,
// so the free lists are never touched concurrently.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl Sync for PluginAllocator {}

impl PluginAllocator {
    pub const fn new() -> Self {
        PluginAllocator {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
                chunks: 0,
            }),
        }
    }
}

impl Default for PluginAllocator {
    fn default() -> Self {
        Self::new()
    }
}

/// The size class of a layout, or `None` when the system allocator serves it.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > MIN_BLOCK {
        return None;
    }
    // 0..=16 → 0, 17..=32 → 1, ... 1,025..=2,048 → 7.
    let rounded = layout.size().max(MIN_BLOCK).next_power_of_two();
    Some((rounded.trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize)
}

#[inline]
const fn block_size(class: usize) -> usize {
    MIN_BLOCK << class
}

impl State {
    /// A block of `class`: the head of its free list, else carved from the chunk.
    ///
    /// # Safety
    /// The caller has exclusive access to the state.
    #[inline]
    unsafe fn take(&mut self, class: usize) -> *mut u8 {
        let Some(head) = self.free.get_mut(class) else { return ptr::null_mut() };
        if !head.is_null() {
            let block = *head;
            // SAFETY: a free block is at least 16 bytes, 16-aligned, and holds the next pointer.
            *head = unsafe { block.cast::<*mut u8>().read() };
            return block;
        }
        let size = block_size(class);
        if (self.end as usize) - (self.next as usize) < size {
            // The rest of the chunk (less than one block of this class) stays unused.
            // SAFETY: CHUNK is non-zero and a power-of-two multiple of the alignment.
            let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MIN_BLOCK)) };
            if chunk.is_null() {
                return ptr::null_mut();
            }
            self.chunks += 1;
            self.next = chunk;
            // SAFETY: within (one past the end of) the chunk just allocated.
            self.end = unsafe { chunk.add(CHUNK) };
        }
        let block = self.next;
        // SAFETY: `size` bytes remain in the chunk (checked above).
        self.next = unsafe { block.add(size) };
        block
    }

    /// Put a block of `class` back on its free list.
    ///
    /// # Safety
    /// The caller has exclusive access to the state; `block` came from `take(class)` and is no
    /// longer used.
    #[inline]
    unsafe fn give(&mut self, class: usize, block: *mut u8) {
        if let Some(head) = self.free.get_mut(class) {
            // SAFETY: the block is at least 16 bytes and 16-aligned: room for the next pointer.
            unsafe { block.cast::<*mut u8>().write(*head) };
            *head = block;
        }
    }
}

// SAFETY: every small block is `block_size(class)` bytes at a 16-aligned address, which covers any
// layout of that class (size at most the block's, alignment at most 16); a block is on a free list
// only after its dealloc, and dealloc gets the layout it was allocated with, so it goes back to the
// class it came from. Everything else is the system allocator's.
unsafe impl GlobalAlloc for PluginAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: single-threaded (see `Sync`), and no reference to the state outlives the call.
            Some(class) => unsafe { (*self.state.get()).take(class) },
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: as in `alloc`; the block came from `take` of the same class.
            Some(class) => unsafe { (*self.state.get()).give(class, block) },
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does not
        // overflow `isize`, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has room for the new size. Only within its class: a block kept
            // in place while shrinking into a smaller class would, once freed, go to that class's
            // list for good, and a call that allocates large and shrinks (the bindings shrink
            // every list and string they return to its length) would take a new large block
            // every time: memory growing by a few hundred bytes per call until the cap.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: forwarded with the caller's guarantees; both are the system's.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: as in `alloc` and `dealloc`; the copy is within both blocks.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_fall_into_power_of_two_classes() {
        let cases = [
            (1, 1, Some(0)),
            (16, 8, Some(0)),
            (17, 1, Some(1)),
            (32, 16, Some(1)),
            (33, 4, Some(2)),
            (1024, 8, Some(6)),
            (1025, 8, Some(7)),
            (MAX_SMALL, 16, Some(7)),
            (MAX_SMALL + 1, 1, None), // the system's
            (8, 32, None),            // alignment above 16: the system's
        ];
        for (size, align, class) in cases {
            assert_eq!(class_of(layout(size, align)), class, "size {size} align {align}");
            if let Some(class) = class {
                assert!(block_size(class) >= size);
            }
        }
    }

    #[test]
    fn a_freed_block_is_the_next_one_of_its_class() {
        let a = PluginAllocator::new();
        unsafe {
            let x = a.alloc(layout(24, 8));
            let y = a.alloc(layout(20, 4));
            assert_ne!(x, y);
            a.dealloc(x, layout(24, 8));
            // Same class (32 bytes): the block just freed comes back.
            assert_eq!(a.alloc(layout(30, 2)), x);
            // Another class does not take it.
            let z = a.alloc(layout(100, 8));
            assert!(z != x && z != y);
            for (p, l) in [(x, layout(30, 2)), (y, layout(20, 4)), (z, layout(100, 8))] {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_within_a_class_and_across_classes_and_to_the_system() {
        let a = PluginAllocator::new();
        unsafe {
            let first = a.alloc(layout(5, 1));
            ptr::copy_nonoverlapping(b"hello".as_ptr(), first, 5);
            // 5 → 12 bytes: still the 16-byte class, the same block.
            let same = a.realloc(first, layout(5, 1), 12);
            assert_eq!(same, first);
            // 12 → 300 bytes: another class, moved with its contents.
            let moved = a.realloc(same, layout(12, 1), 300);
            assert_ne!(moved, same);
            assert_eq!(std::slice::from_raw_parts(moved, 5), b"hello");
            // 300 → 40 bytes: a smaller class, moved there with its contents.
            let shrunk = a.realloc(moved, layout(300, 1), 40);
            assert_ne!(shrunk, moved);
            assert_eq!(std::slice::from_raw_parts(shrunk, 5), b"hello");
            // 40 → 10,000 bytes: to the system allocator, contents kept.
            let big = a.realloc(shrunk, layout(40, 1), 10_000);
            assert_eq!(std::slice::from_raw_parts(big, 5), b"hello");
            // And back down to a class.
            let small = a.realloc(big, layout(10_000, 1), 7);
            assert_eq!(std::slice::from_raw_parts(small, 5), b"hello");
            a.dealloc(small, layout(7, 1));
        }
    }

    /// What a plugin call does, again and again: allocate, shrink into a smaller class (the
    /// bindings' `into_boxed_slice`), grow, free. Memory stays at its first chunk.
    #[test]
    fn calls_that_allocate_shrink_and_free_keep_memory_flat() {
        let a = PluginAllocator::new();
        for _ in 0..200_000 {
            unsafe {
                let value = a.alloc(layout(80, 1)); // rendered with room to spare: 128 bytes
                let value = a.realloc(value, layout(80, 1), 50); // shrunk to its length: 64
                let list = a.alloc(layout(24, 4));
                let list = a.realloc(list, layout(24, 4), 96); // grown: 32 → 128
                a.dealloc(list, layout(96, 4));
                a.dealloc(value, layout(50, 1));
            }
        }
        assert_eq!(unsafe { (*a.state.get()).chunks }, 1, "memory grew with the number of calls");
    }

    /// Random allocations, frees and reallocations of every class and of the system's: no two live
    /// blocks overlap, each is aligned, and each keeps the bytes written into it.
    #[test]
    fn live_blocks_never_overlap_and_keep_their_contents() {
        let a = PluginAllocator::new();
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000u32 {
            let roll = next();
            if live.is_empty() || roll % 3 != 0 {
                let size = match roll % 7 {
                    0 => 1 + (next() % 8_000) as usize, // sometimes the system's
                    _ => 1 + (next() % 700) as usize,
                };
                let align = 1 << (next() % 6); // 1 ..= 32
                let l = layout(size, align);
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "step {step}");
                let fill = (step % 251) as u8;
                unsafe { ptr::write_bytes(p, fill, size) };
                live.push((p, l, fill));
            } else {
                let i = (next() % live.len() as u64) as usize;
                let (p, l, fill) = live.swap_remove(i);
                let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
                assert!(bytes.iter().all(|b| *b == fill), "step {step}: a block was overwritten");
                if roll % 2 == 0 {
                    unsafe { a.dealloc(p, l) };
                } else {
                    let new_size = 1 + (next() % 3_000) as usize;
                    let q = unsafe { a.realloc(p, l, new_size) };
                    let kept = l.size().min(new_size);
                    let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                    assert!(bytes.iter().all(|b| *b == fill), "step {step}: realloc lost bytes");
                    let nl = layout(new_size, l.align());
                    unsafe { ptr::write_bytes(q, fill, new_size) };
                    live.push((q, nl, fill));
                }
            }
            if step % 1_000 == 0 {
                let mut spans: Vec<(usize, usize)> = live.iter().map(|(p, l, _)| (*p as usize, l.size())).collect();
                spans.sort_unstable();
                for pair in spans.windows(2) {
                    assert!(pair[0].0 + pair[0].1 <= pair[1].0, "step {step}: live blocks overlap");
                }
            }
        }
        for (p, l, _) in live {
            unsafe { a.dealloc(p, l) };
        }
    }
}
