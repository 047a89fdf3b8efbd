//! Thin safe wrapper over ggml, the tensor library under llama.cpp, through the raw bindings of
//! `llama-cpp-sys-2`. Every `unsafe` block of the project lives in this crate.
//!
//! The model of ownership:
//! - [`Context`] owns a `ggml_context` (tensor metadata; with `no_alloc` no tensor data).
//! - [`Tensor`] and [`Graph`] are handles that share ownership of their context (an `Arc`), so
//!   the metadata they point to lives as long as any handle: safe code cannot reach a freed
//!   context. A context in turn keeps alive what its tensors' memory depends on: the contexts of
//!   tensors its nodes read (recorded by every operation), the buffers its tensors were placed
//!   in ([`Buffer::alloc_ctx_tensors`], [`Buffer::place`]) and the scheduler that allocated its
//!   graph ([`Sched::alloc_graph`]). What stays the caller's duty: not to evaluate or read a
//!   graph after its scheduler reallocated its compute buffers for another graph
//!   ([`Sched::total_buffer_size`] tells when), as ggml's allocator requires.
//! - [`Buffer`] owns backend memory; [`Backend`] a compute backend; [`Sched`] the scheduler that
//!   splits a graph over backends and allocates its intermediate tensors.

mod backend;
mod context;
mod types;

pub use backend::{Backend, Buffer, BufferType, GpuInfo, PinnedHost, Sched, WeightUse};
pub use context::{Context, Graph, RopeParams, Tensor};
pub use llama_cpp_sys_2 as sys;
pub use types::Type;

/// Send ggml's own log lines to a sink of ours (default: silent unless `verbose`).
pub fn set_log_verbosity(verbose: bool) {
    unsafe extern "C" fn quiet(
        level: sys::ggml_log_level,
        text: *const std::os::raw::c_char,
        _user: *mut std::os::raw::c_void,
    ) {
        // Errors always reach stderr; the rest only when asked for.
        if level == sys::GGML_LOG_LEVEL_WARN || level == sys::GGML_LOG_LEVEL_ERROR {
            // SAFETY: ggml passes a valid NUL-terminated string for the duration of the call.
            let s = unsafe { std::ffi::CStr::from_ptr(text) };
            eprint!("{}", s.to_string_lossy());
        }
    }
    unsafe extern "C" fn loud(
        _level: sys::ggml_log_level,
        text: *const std::os::raw::c_char,
        _user: *mut std::os::raw::c_void,
    ) {
        // SAFETY: as above.
        let s = unsafe { std::ffi::CStr::from_ptr(text) };
        eprint!("{}", s.to_string_lossy());
    }
    let cb: sys::ggml_log_callback = if verbose { Some(loud) } else { Some(quiet) };
    // SAFETY: the callbacks are plain functions valid for the whole program; user data unused.
    unsafe { sys::ggml_log_set(cb, std::ptr::null_mut()) };
}

pub use memmap2::Mmap;

/// Memory-map a file read-only (model weights are used in place, without copying).
pub fn map_file_readonly(f: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: mapping is unsafe only because another process could truncate or modify the file
    // while it is mapped; like every GGUF loader we treat model files as immutable inputs.
    unsafe { memmap2::MmapOptions::new().map(f) }
}
