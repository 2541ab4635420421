//! The allocator of the component (wasm32 only). Every decision runs in a fresh instance whose
//! memory is thrown away afterwards, so nothing needs to be freed: each allocation is an
//! addition, and freeing does nothing. A decision over a thousand machines makes thousands of
//! allocations (every string the host passes in is one), which a general allocator made the
//! larger part of its cost.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 65536;

struct Bump {
    /// The next free byte, and the end of the memory this allocator has grown.
    next: AtomicUsize,
    end: AtomicUsize,
}

#[global_allocator]
static ALLOCATOR: Bump = Bump { next: AtomicUsize::new(0), end: AtomicUsize::new(0) };

// SAFETY: single-threaded (core wasm has no threads here); every block handed out is aligned
// as asked, lies in memory this allocator grew, and is never handed out twice.
unsafe impl GlobalAlloc for Bump {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let aligned = |at: usize| (at + layout.align() - 1) & !(layout.align() - 1);
        let mut start = aligned(self.next.load(Ordering::Relaxed));
        let mut end = self.end.load(Ordering::Relaxed);
        if end == 0 || start.saturating_add(layout.size()) > end {
            // Enough for the block wherever it lands: after the end, or at fresh pages.
            let wanted =
                start.saturating_add(layout.size()).saturating_sub(end) + layout.size() + layout.align();
            let pages = wanted.div_ceil(PAGE).max(16);
            let before = core::arch::wasm32::memory_grow(0, pages);
            if before == usize::MAX {
                return core::ptr::null_mut();
            }
            if end == 0 || before * PAGE != end {
                // The first growth, or memory grown by someone else: start afresh at the new pages.
                start = aligned(before * PAGE);
            }
            end = (before + pages) * PAGE;
            self.end.store(end, Ordering::Relaxed);
        }
        let stop = start + layout.size();
        if stop > end {
            return core::ptr::null_mut();
        }
        self.next.store(stop, Ordering::Relaxed);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// The canonical ABI's allocator: the host calls it for every string and every list it passes
/// in, five or six times per machine. wit-bindgen's own `cabi_realloc` reaches this allocator
/// through four more calls (its versioned wrapper, `__rust_alloc` and its shims); at a thousand
/// machines those were a tenth of a decision. wit-bindgen defines its symbol weak, so this
/// one is linked in its place. The semantics are the canonical ABI's: a zero-sized block is
/// the alignment itself, and a block that grows keeps its contents.
///
/// # Safety
///
/// `align` is a power of two, and `old`, when `old_len` is not 0, is a block of `old_len`
/// bytes this allocator handed out: what the canonical ABI promises of its callers.
#[no_mangle]
pub unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    let new = ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_len, align));
    if new.is_null() {
        core::arch::wasm32::unreachable();
    }
    if old_len != 0 {
        core::ptr::copy_nonoverlapping(old, new, old_len.min(new_len));
    }
    new
}
