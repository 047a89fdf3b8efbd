//! GGUF reading: memory-mapped files, every metadata type, split files, precise errors.
//!
//! Layout (little-endian): magic `GGUF`, version (2|3), tensor count u64, kv count u64, then the
//! key/values, then the tensor infos (name, dims, type, offset), then tensor data aligned to
//! `general.alignment` (default 32).

use ggml::Mmap;
use ggml::Type;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    // The I/O error is in the message, not a `source`: error chains ({:#}) print it once.
    #[error("{path}: cannot open: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{path}: at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer type as i64 (u64 above i64::MAX gives None).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => v as i64,
            Value::I8(v) => v as i64,
            Value::U16(v) => v as i64,
            Value::I16(v) => v as i64,
            Value::U32(v) => v as i64,
            Value::I32(v) => v as i64,
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            Value::Bool(v) => v as i64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => self.as_i64().map(|v| v != 0),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }
}

/// Where a tensor's bytes are: which file of a split set, and the byte range in it.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: ne[0] is the row length.
    pub ne: [i64; 4],
    pub n_dims: usize,
    pub ty: Type,
    pub file: usize,
    /// Absolute byte offset of the data in its file.
    pub offset: u64,
    pub nbytes: u64,
}

/// One memory-mapped GGUF file.
pub struct MappedFile {
    pub path: PathBuf,
    pub map: Mmap,
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

/// A model's GGUF: metadata from the first file, tensors from all files of a split set.
pub struct Gguf {
    pub files: Vec<Arc<MappedFile>>,
    pub version: u32,
    kv: HashMap<String, Value>,
    /// Keys in file order (for listings).
    keys: Vec<String>,
    pub tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.pos as u64,
            what: what.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "file truncated: expected {n} bytes of {what}, only {} left",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let start = self.pos;
        let n = self.u64(what)?;
        if n > (self.buf.len() - self.pos) as u64 {
            self.pos = start;
            return Err(self.err(format!("{what}: string length {n} exceeds the file")));
        }
        let bytes = self.take(n as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Corrupt {
            path: self.path.to_path_buf(),
            offset: start as u64,
            what: format!("{what}: not valid UTF-8"),
        })
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.take(1, key)?[0]),
            1 => Value::I8(self.take(1, key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(
                self.take(2, key)?.try_into().expect("2"),
            )),
            3 => Value::I16(i16::from_le_bytes(
                self.take(2, key)?.try_into().expect("2"),
            )),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => {
                let b = self.take(1, key)?[0];
                if b > 1 {
                    return Err(self.err(format!("{key}: bool value {b} is neither 0 nor 1")));
                }
                Value::Bool(b == 1)
            }
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 0 {
                    return Err(self.err(format!("{key}: nested arrays are not supported")));
                }
                let ety = self.u32(key)?;
                let n = self.u64(key)?;
                // Each element takes at least one byte: a bound that rejects absurd counts early.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(self.err(format!("{key}: array of {n} elements exceeds the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            other => {
                self.pos -= 4;
                return Err(self.err(format!("{key}: unknown metadata value type {other}")));
            }
        })
    }
}

struct Parsed {
    version: u32,
    kv: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

fn parse(path: &Path, buf: &[u8], file_index: usize) -> Result<Parsed, GgufError> {
    let mut r = Reader { buf, pos: 0, path };
    let magic = r.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err(GgufError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            what: format!(
                "not a GGUF file (magic {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(magic)
            ),
        });
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        r.pos -= 4;
        return Err(r.err(format!(
            "unsupported GGUF version {version} (supported: 2, 3)"
        )));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    if n_tensors > buf.len() as u64 || n_kv > buf.len() as u64 {
        return Err(r.err(format!(
            "implausible counts: {n_tensors} tensors, {n_kv} metadata entries"
        )));
    }
    let mut kv = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        kv.push((key, v));
    }
    let alignment = kv
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_i64())
        .unwrap_or(32);
    if alignment <= 0 || (alignment & (alignment - 1)) != 0 {
        return Err(GgufError::Invalid {
            path: path.to_path_buf(),
            what: format!("general.alignment = {alignment} is not a power of two"),
        });
    }
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let at = r.pos as u64;
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)? as usize;
        if !(1..=4).contains(&n_dims) {
            return Err(GgufError::Corrupt {
                path: path.to_path_buf(),
                offset: at,
                what: format!("tensor {name}: {n_dims} dimensions (expected 1 to 4)"),
            });
        }
        let mut ne = [1i64; 4];
        for d in ne.iter_mut().take(n_dims) {
            let v = r.u64(&name)?;
            if v == 0 || v > i64::MAX as u64 / 2 {
                return Err(r.err(format!("tensor {name}: dimension {v} is invalid")));
            }
            *d = v as i64;
        }
        let raw_ty = r.u32(&name)?;
        let ty = Type::from_raw(raw_ty).ok_or_else(|| GgufError::Corrupt {
            path: path.to_path_buf(),
            offset: r.pos as u64 - 4,
            what: format!("tensor {name}: unknown tensor type {raw_ty}"),
        })?;
        let offset = r.u64(&name)?;
        let row = ty
            .row_bytes(ne[0] as u64)
            .ok_or_else(|| GgufError::Invalid {
                path: path.to_path_buf(),
                what: format!(
                    "tensor {name}: row of {} is not a multiple of the {ty} block size",
                    ne[0]
                ),
            })?;
        let nbytes = ne[1..]
            .iter()
            .try_fold(row, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| GgufError::Invalid {
                path: path.to_path_buf(),
                what: format!("tensor {name}: size overflows"),
            })?;
        infos.push(TensorInfo {
            name,
            ne,
            n_dims,
            ty,
            file: file_index,
            offset,
            nbytes,
        });
    }
    let data_start = (r.pos as u64).div_ceil(alignment as u64) * alignment as u64;
    for t in &mut infos {
        if t.offset % alignment as u64 != 0 {
            return Err(GgufError::Invalid {
                path: path.to_path_buf(),
                what: format!(
                    "tensor {}: data offset {} is not aligned to {alignment}",
                    t.name, t.offset
                ),
            });
        }
        t.offset += data_start;
        let end = t.offset.saturating_add(t.nbytes);
        if end > buf.len() as u64 {
            return Err(GgufError::Corrupt {
                path: path.to_path_buf(),
                offset: t.offset,
                what: format!(
                    "file truncated: tensor {} needs bytes {}..{end}, file has {}",
                    t.name,
                    t.offset,
                    buf.len()
                ),
            });
        }
    }
    Ok(Parsed {
        version,
        kv,
        tensors: infos,
    })
}

fn map_file(path: &Path) -> Result<Arc<MappedFile>, GgufError> {
    if path.is_dir() {
        return Err(GgufError::Invalid {
            path: path.to_path_buf(),
            what: "is a directory, not a GGUF file".to_string(),
        });
    }
    let f = std::fs::File::open(path).map_err(|err| GgufError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    let map = map_readonly(&f).map_err(|err| GgufError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    Ok(Arc::new(MappedFile {
        path: path.to_path_buf(),
        map,
    }))
}

/// The names of all files of the split set that `path` belongs to (`X-00001-of-0000N.gguf`),
/// or just `path`.
fn split_paths(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    // ...-00001-of-00003
    if let Some(idx) = stem.rfind("-of-") {
        let (head, total) = (&stem[..idx], &stem[idx + 4..]);
        if let Some(dash) = head.rfind('-') {
            let (prefix, _num) = (&head[..dash], &head[dash + 1..]);
            if let Ok(n) = total.parse::<usize>() {
                let width = total.len();
                return (1..=n)
                    .map(|i| path.with_file_name(format!("{prefix}-{i:0width$}-of-{total}.gguf")))
                    .collect();
            }
        }
    }
    vec![path.to_path_buf()]
}

impl Gguf {
    /// Open a GGUF (and the rest of its split set, if it is one).
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let first = map_file(path)?;
        let p0 = parse(path, &first.map, 0)?;
        let mut files = vec![first];
        let mut kv = p0.kv;
        let mut tensors = p0.tensors;
        let split_count = kv
            .iter()
            .find(|(k, _)| k == "split.count")
            .and_then(|(_, v)| v.as_i64())
            .unwrap_or(1);
        if split_count > 1 {
            let paths = split_paths(path);
            if paths.len() as i64 != split_count {
                return Err(GgufError::Invalid {
                    path: path.to_path_buf(),
                    what: format!(
                        "split.count is {split_count} but the file name does not follow -0000i-of-0000N.gguf"
                    ),
                });
            }
            for (i, p) in paths.iter().enumerate().skip(1) {
                let f = map_file(p)?;
                let pi = parse(p, &f.map, i)?;
                tensors.extend(pi.tensors);
                files.push(f);
            }
            if let Some(n) = kv
                .iter()
                .find(|(k, _)| k == "split.tensors.count")
                .and_then(|(_, v)| v.as_i64())
            {
                if n as usize != tensors.len() {
                    return Err(GgufError::Invalid {
                        path: path.to_path_buf(),
                        what: format!(
                            "split.tensors.count is {n} but the files hold {}",
                            tensors.len()
                        ),
                    });
                }
            }
        }
        let keys: Vec<String> = kv.iter().map(|(k, _)| k.clone()).collect();
        let mut by_name = HashMap::new();
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(GgufError::Invalid {
                    path: path.to_path_buf(),
                    what: format!("duplicate tensor {}", t.name),
                });
            }
        }
        Ok(Gguf {
            files,
            version: p0.version,
            kv: kv.drain(..).collect(),
            keys,
            tensors,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.files[0].path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.get(key)
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    fn invalid(&self, what: String) -> GgufError {
        GgufError::Invalid {
            path: self.path().to_path_buf(),
            what,
        }
    }

    /// A required string value.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            None => Err(self.invalid(format!("missing metadata key {key}"))),
            Some(v) => v.as_str().ok_or_else(|| {
                self.invalid(format!(
                    "metadata {key}: expected a string, found {}",
                    v.type_name()
                ))
            }),
        }
    }
    /// A required integer value.
    pub fn int(&self, key: &str) -> Result<i64, GgufError> {
        match self.get(key) {
            None => Err(self.invalid(format!("missing metadata key {key}"))),
            Some(v) => v.as_i64().ok_or_else(|| {
                self.invalid(format!(
                    "metadata {key}: expected an integer, found {}",
                    v.type_name()
                ))
            }),
        }
    }
    /// A required positive integer, usable as a size.
    pub fn size(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.int(key)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            self.invalid(format!("metadata {key} = {v}: expected a positive integer"))
        })
    }
    /// An optional float value (integers are accepted).
    pub fn float_or(&self, key: &str, default: f64) -> Result<f64, GgufError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                self.invalid(format!(
                    "metadata {key}: expected a number, found {}",
                    v.type_name()
                ))
            }),
        }
    }
    pub fn int_or(&self, key: &str, default: i64) -> Result<i64, GgufError> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.int(key),
        }
    }
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(default)
    }
    /// An optional array of strings.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        self.array_of(key, "strings", Value::as_str)
    }
    /// An optional array of integers.
    pub fn int_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        self.array_of(key, "integers", Value::as_i64)
    }
    /// An optional array whose every element converts with `conv` (`what` names the element kind).
    fn array_of<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        conv: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let arr = v.as_array().ok_or_else(|| {
            self.invalid(format!(
                "metadata {key}: expected an array, found {}",
                v.type_name()
            ))
        })?;
        arr.iter()
            .map(|e| {
                conv(e).ok_or_else(|| {
                    self.invalid(format!("metadata {key}: expected an array of {what}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor (inside its memory map).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.files[t.file].map[t.offset as usize..(t.offset + t.nbytes) as usize]
    }

    /// The architecture name (`general.architecture`).
    pub fn arch(&self) -> Result<&str, GgufError> {
        self.str("general.architecture")
    }

    /// Total bytes of tensor data.
    pub fn tensor_data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes).sum()
    }
}

fn map_readonly(f: &std::fs::File) -> std::io::Result<Mmap> {
    ggml::map_file_readonly(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        let p = Path::new("/m/model-00002-of-00003.gguf");
        let v = split_paths(p);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], Path::new("/m/model-00001-of-00003.gguf"));
        assert_eq!(
            split_paths(Path::new("/m/x.gguf")),
            vec![PathBuf::from("/m/x.gguf")]
        );
    }
}
