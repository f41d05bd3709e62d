//! The binary's memory allocator: jemalloc, for Rust and for SQLite. The library leaves the
//! allocator to whoever links it (its tests keep the C library's); the service sets it here.

use std::os::raw::{c_int, c_void};

use rusqlite::ffi;
use tikv_jemalloc_sys::{free, malloc, malloc_usable_size, realloc};

/// jemalloc instead of the C library's malloc. A notification is allocated on an HTTP worker and
/// freed on the recorder thread (its answer the other way round); glibc then takes the other
/// thread's arena lock for each free, and under a carpet-bombing load the allocator and those
/// locks' futex wake-ups were a fifth of the service's time (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`). A background thread gives
/// freed memory back to the system a quarter of a second after it was last used, so the
/// resident size follows the load down when a burst is over; two arenas, not eight, for a lower
/// peak during one (target 5 of the benchmarks: 28 MiB settled and a 52 MiB peak, against 37–40
/// and 56–59 with a second's decay and jemalloc's arena count, at the same CPU per
/// notification). `_RJEM_MALLOC_CONF` in the environment still overrides these.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0,narenas:2\0"[0]);

fn size(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0)
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    malloc(size(n))
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    free(p)
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    realloc(p, size(n))
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    c_int::try_from(malloc_usable_size(p)).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    n.checked_add(7).map_or(n, |m| m & !7)
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// SQLite's memory from the same allocator, and without SQLite's memory statistics (on by
/// default: every allocation SQLite makes then takes one process-wide mutex; nothing here reads
/// them). Under ingest load the recorder spent 8% of its time in glibc's malloc and that mutex.
/// Call on the main thread before any other thread starts: `sqlite3_config` is not thread-safe
/// and only allowed before SQLite initialises (too late, it answers SQLITE_MISUSE and SQLite
/// keeps its defaults; the caller logs that).
pub fn configure_sqlite() -> Result<(), String> {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(x_malloc),
        xFree: Some(x_free),
        xRealloc: Some(x_realloc),
        xSize: Some(x_size),
        xRoundup: Some(x_roundup),
        xInit: Some(x_init),
        xShutdown: Some(x_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: called once from `serve` before the runtime and its threads exist, so no
    // other SQLite call runs concurrently; SQLite copies `methods` before returning.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("SQLITE_CONFIG_MALLOC: error {rc}"));
    }
    // SAFETY: as above.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("SQLITE_CONFIG_MEMSTATUS: error {rc}"));
    }
    Ok(())
}
