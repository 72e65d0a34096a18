//! What a `no_std` Rust object needs inside the kernel: an allocator and a
//! panic handler, both through the C layer.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;

use hp_core::event::LineBuf;

use crate::ffi;

struct KernelAllocator;

/// kmalloc aligns every object to at least 8 bytes, and a power-of-two
/// size to itself; vmalloc (kvmalloc's fallback) to a page.
const KMALLOC_MIN_ALIGN: usize = 8;

/// Size to ask kvmalloc for so that the result is aligned as `layout` needs.
fn kvmalloc_size(layout: Layout) -> usize {
    if layout.align() <= KMALLOC_MIN_ALIGN {
        layout.size()
    } else {
        layout.size().max(layout.align()).next_power_of_two()
    }
}

unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: hp_c_alloc is kvmalloc(GFP_KERNEL); Rust only allocates
        // while planning, in process context.
        unsafe { ffi::hp_c_alloc(kvmalloc_size(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: ptr came from hp_c_alloc.
        unsafe { ffi::hp_c_free(ptr) }
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = LineBuf::<200>::default();
    let _ = write!(line, "{info}");
    let text = line.as_str();
    // SAFETY: text is valid for its length; hp_c_panic never returns.
    unsafe { ffi::hp_c_panic(text.as_ptr(), text.len()) }
}
