//! What a `no_std` Rust object needs inside the kernel: an allocator and a
//! panic handler, both through the C layer.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;

use hp_core::event::LineBuf;

use crate::ffi;

struct KernelAllocator;

/// kvmalloc gives at least 8-byte alignment; nothing here asks for more,
/// and a request that did would get a null pointer (an allocation failure),
/// never misaligned memory.
const KMALLOC_MIN_ALIGN: usize = 8;

unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > KMALLOC_MIN_ALIGN {
            return core::ptr::null_mut();
        }
        // SAFETY: hp_c_alloc is kvmalloc(GFP_KERNEL); Rust only allocates
        // while planning, in process context.
        unsafe { ffi::hp_c_alloc(layout.size()) }
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
