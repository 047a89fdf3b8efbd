//! Writing GGUF files (v3): metadata and tensors. Used to make synthetic models and test inputs.

use crate::format::gguf::Value;
use ggml::Type;
use std::io::{self, Write};

/// A tensor to write: name, shape (ggml order), type and its raw bytes.
pub struct TensorData {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: Type,
    pub data: Vec<u8>,
}

const ALIGN: usize = 32;

fn w_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn w_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => w_str(out, s),
        Value::Array(items) => {
            let ety = items.first().map_or(4, type_id);
            out.extend_from_slice(&ety.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                w_value(out, it);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Serialize a GGUF: header, metadata (in order), tensor infos, aligned data.
pub fn write_gguf(
    out: &mut impl Write,
    kv: &[(String, Value)],
    tensors: &[TensorData],
) -> io::Result<()> {
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        w_str(&mut head, k);
        head.extend_from_slice(&type_id(v).to_le_bytes());
        w_value(&mut head, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        w_str(&mut head, &t.name);
        head.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for &d in &t.ne {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ty.raw().to_le_bytes());
        head.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.data.len().div_ceil(ALIGN) * ALIGN;
    }
    head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
    out.write_all(&head)?;
    for t in tensors {
        out.write_all(&t.data)?;
        let pad = t.data.len().div_ceil(ALIGN) * ALIGN - t.data.len();
        out.write_all(&vec![0u8; pad])?;
    }
    Ok(())
}

/// Read every metadata entry and tensor of an open GGUF back into writable form (for tests and
/// tools that rewrite a model with changes).
pub fn read_all(g: &crate::format::gguf::Gguf) -> (Vec<(String, Value)>, Vec<TensorData>) {
    let kv = g
        .keys()
        .iter()
        .map(|k| (k.clone(), g.get(k).expect("listed key").clone()))
        .collect();
    let tensors = g
        .tensors
        .iter()
        .map(|t| TensorData {
            name: t.name.clone(),
            ne: t.ne[..t.n_dims].iter().map(|&d| d as u64).collect(),
            ty: t.ty,
            data: g.tensor_bytes(t).to_vec(),
        })
        .collect();
    (kv, tensors)
}
