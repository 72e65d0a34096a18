//! What a `no_std` Rust object needs inside the kernel: an allocator and a
//! panic handler, both through the C layer.
//!
//! Every allocation of ours is fallible (`try_reserve`, a null check), with
//! one exception we cannot change: iced-x86 builds its decoder tables on
//! first use, infallibly, and never frees them. `hp_decoder_setup` builds
//! them once at load into an arena reserved beforehand (the host test
//! `decoder_tables` proves they fit), and `hp_decoder_teardown` frees it at
//! unload. So no allocation failure can reach the panic handler, and
//! nothing outlives the module.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hp_core::arena::{Bump, DECODER_TABLES_BYTES};
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

/// The decoder tables' arena: `[ARENA_START, ARENA_END)`.
static ARENA_START: AtomicUsize = AtomicUsize::new(0);
static ARENA_END: AtomicUsize = AtomicUsize::new(0);
/// Set only while `hp_decoder_setup` builds the tables.
static BUILDING_TABLES: AtomicBool = AtomicBool::new(false);

struct ArenaCell(UnsafeCell<Bump>);
// SAFETY: the bump pointer is used only while BUILDING_TABLES is set, that is
// inside hp_decoder_setup, which module init calls once before anything else
// of ours can run (no notifier, no parameter writes, no probe yet).
unsafe impl Sync for ArenaCell {}
static ARENA: ArenaCell = ArenaCell(UnsafeCell::new(Bump::new(0, 0)));

fn in_arena(ptr: *mut u8) -> bool {
    let p = ptr as usize;
    p >= ARENA_START.load(Ordering::Relaxed) && p < ARENA_END.load(Ordering::Relaxed)
}

unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if BUILDING_TABLES.load(Ordering::Relaxed) {
            // SAFETY: see ArenaCell. A miss is null: the host test keeps the
            // arena larger than what the tables take.
            return unsafe { &mut *ARENA.0.get() }.alloc(layout).unwrap_or(0) as *mut u8;
        }
        // SAFETY: hp_c_alloc is kvmalloc(GFP_KERNEL); Rust only allocates
        // in process context (attach, detach, load).
        unsafe { ffi::hp_c_alloc(kvmalloc_size(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // The arena is freed whole at unload; its blocks one by one never.
        if !in_arena(ptr) {
            // SAFETY: ptr came from hp_c_alloc.
            unsafe { ffi::hp_c_free(ptr) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;

/// Reserves the arena and builds iced-x86's decoder tables in it. Returns 0
/// or -ENOMEM, with nothing left allocated on failure.
#[no_mangle]
pub extern "C" fn hp_decoder_setup() -> i32 {
    // SAFETY: a plain allocation through the C layer.
    let start = unsafe { ffi::hp_c_alloc(DECODER_TABLES_BYTES) } as usize;
    if start == 0 {
        crate::log::error_static(c"out of memory for the decoder tables");
        return -ffi::ENOMEM;
    }
    ARENA_START.store(start, Ordering::Relaxed);
    ARENA_END.store(start + DECODER_TABLES_BYTES, Ordering::Relaxed);
    // SAFETY: see ArenaCell; nobody uses the arena yet.
    unsafe { *ARENA.0.get() = Bump::new(start, DECODER_TABLES_BYTES) };
    BUILDING_TABLES.store(true, Ordering::Relaxed);
    hp_core::sites::build_decoder_tables();
    BUILDING_TABLES.store(false, Ordering::Relaxed);
    0
}

/// Frees the arena, and with it the decoder tables. Only at unload, or
/// when load fails, once nothing decodes any more.
#[no_mangle]
pub extern "C" fn hp_decoder_teardown() {
    let start = ARENA_START.swap(0, Ordering::Relaxed);
    ARENA_END.store(0, Ordering::Relaxed);
    if start != 0 {
        // SAFETY: start came from hp_c_alloc in hp_decoder_setup.
        unsafe { ffi::hp_c_free(start as *mut u8) }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = LineBuf::<200>::default();
    let _ = write!(line, "{info}");
    let text = line.as_str();
    // SAFETY: text is valid for its length; hp_c_panic never returns.
    unsafe { ffi::hp_c_panic(text.as_ptr(), text.len()) }
}

/// Like `Box::new`, but an allocation failure is `None`, not a panic.
pub fn try_box<T>(value: T) -> Option<*mut T> {
    // SAFETY: the layouts used are T's own; a zero-sized T needs no memory.
    let layout = Layout::new::<T>();
    let raw = if layout.size() == 0 {
        core::ptr::NonNull::<T>::dangling().as_ptr()
    } else {
        unsafe { alloc::alloc::alloc(layout) }.cast::<T>()
    };
    if raw.is_null() {
        return None;
    }
    // SAFETY: raw is a fresh allocation with T's layout.
    unsafe { raw.write(value) };
    Some(raw)
}
