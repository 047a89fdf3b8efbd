//! ggml tensor element types.

use crate::sys;
use std::ffi::CStr;

/// A ggml element type (`ggml_type`). Holds only values ggml knows (checked by [`Type::from_raw`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(sys::ggml_type);

impl Type {
    pub const F32: Type = Type(sys::GGML_TYPE_F32);
    pub const F16: Type = Type(sys::GGML_TYPE_F16);
    pub const BF16: Type = Type(sys::GGML_TYPE_BF16);
    pub const Q4_0: Type = Type(sys::GGML_TYPE_Q4_0);
    pub const Q8_0: Type = Type(sys::GGML_TYPE_Q8_0);
    pub const Q4_K: Type = Type(sys::GGML_TYPE_Q4_K);
    pub const Q6_K: Type = Type(sys::GGML_TYPE_Q6_K);
    pub const I32: Type = Type(sys::GGML_TYPE_I32);
    pub const I64: Type = Type(sys::GGML_TYPE_I64);

    /// The type with ggml's numeric id `raw`, if ggml has one (removed ids have no traits).
    pub fn from_raw(raw: u32) -> Option<Type> {
        if raw >= sys::GGML_TYPE_COUNT {
            return None;
        }
        // SAFETY: raw < GGML_TYPE_COUNT, so the traits table lookup is in bounds.
        let size = unsafe { sys::ggml_type_size(raw) };
        let blck = unsafe { sys::ggml_blck_size(raw) };
        (size > 0 && blck > 0).then_some(Type(raw))
    }

    pub fn raw(self) -> sys::ggml_type {
        self.0
    }

    pub fn name(self) -> &'static str {
        // SAFETY: valid type id (constructor invariant); ggml returns a static C string.
        unsafe { CStr::from_ptr(sys::ggml_type_name(self.0)) }
            .to_str()
            .unwrap_or("?")
    }

    /// Elements per block (1 for plain float types).
    pub fn block_size(self) -> u64 {
        // SAFETY: valid type id.
        unsafe { sys::ggml_blck_size(self.0) as u64 }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        // SAFETY: valid type id.
        unsafe { sys::ggml_type_size(self.0) as u64 }
    }

    /// Bytes of one row of `n` elements, if `n` is a whole number of blocks.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let b = self.block_size();
        n.is_multiple_of(b).then(|| n / b * self.block_bytes())
    }

    pub fn is_quantized(self) -> bool {
        // SAFETY: valid type id.
        unsafe { sys::ggml_is_quantized(self.0) }
    }

    /// Quantize `nrows` rows of `n_per_row` f32 values to this type (ggml's reference
    /// quantizers, no importance matrix). `None` if the type cannot be produced this way (not a
    /// quantized type, one that needs an importance matrix, or rows that are not whole blocks).
    pub fn quantize(self, src: &[f32], nrows: usize, n_per_row: usize) -> Option<Vec<u8>> {
        if !self.is_quantized() || src.len() != nrows * n_per_row {
            return None;
        }
        // SAFETY: valid type id.
        if unsafe { sys::ggml_quantize_requires_imatrix(self.0) } {
            return None;
        }
        let row = self.row_bytes(n_per_row as u64)? as usize;
        let mut out = vec![0u8; row * nrows];
        // SAFETY: src holds nrows * n_per_row floats; out has room for nrows rows of this type
        // (row_bytes checked n_per_row is whole blocks); no importance matrix is passed, which
        // the type does not require (checked above). ggml_quantize_chunk only reads src and
        // writes out within those bounds.
        let written = unsafe {
            sys::ggml_quantize_chunk(
                self.0,
                src.as_ptr(),
                out.as_mut_ptr().cast(),
                0,
                nrows as i64,
                n_per_row as i64,
                std::ptr::null(),
            )
        };
        (written == out.len()).then_some(out)
    }

    /// Parse a KV-cache type name as llama.cpp spells it (`f16`, `q8_0`, ...).
    pub fn parse(name: &str) -> Option<Type> {
        (0..sys::GGML_TYPE_COUNT)
            .filter_map(Type::from_raw)
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Debug for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
