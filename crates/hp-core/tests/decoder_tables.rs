//! iced-x86's decoder tables must fit the arena the module reserves for
//! them (`hp_core::arena`): built here with the same bump allocator, on a
//! buffer of exactly that size. Running out aborts this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

use hp_core::arena::{Bump, DECODER_TABLES_BYTES};

thread_local! {
    static ARENA: RefCell<Option<Bump>> = const { RefCell::new(None) };
    static IN_ARENA: Cell<bool> = const { Cell::new(false) };
}

struct TestAllocator;

unsafe impl GlobalAlloc for TestAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IN_ARENA.with(Cell::get) {
            return ARENA.with(|a| a.borrow_mut().as_mut().and_then(|b| b.alloc(layout)).unwrap_or(0)) as *mut u8;
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !IN_ARENA.with(Cell::get) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: TestAllocator = TestAllocator;

#[test]
fn decoder_tables_fit_the_arena() {
    let buffer = vec![0u8; DECODER_TABLES_BYTES].into_boxed_slice();
    let start = buffer.as_ptr() as usize;
    ARENA.with(|a| *a.borrow_mut() = Some(Bump::new(start, DECODER_TABLES_BYTES)));
    IN_ARENA.with(|f| f.set(true));
    hp_core::sites::build_decoder_tables();
    IN_ARENA.with(|f| f.set(false));
    let used = ARENA.with(|a| a.borrow().as_ref().unwrap().used_from(start));
    println!("decoder tables: {used} of {DECODER_TABLES_BYTES} arena bytes");
    assert!(used > 0, "the tables were built before the test: it proves nothing");
    // The tables live in `buffer` from now on: keep it for the process.
    std::mem::forget(buffer);
}
