//! A bounded reader for PyTorch zip checkpoints (`pytorch_model.bin`, what `torch.save` writes since
//! 1.6): the `<archive>/data.pkl` state dict is interpreted by a small pickle machine that knows
//! only the opcodes a state dict uses, and every tensor's storage `<archive>/data/<key>` is checked
//! against the file before anything is allocated for it (docs/contracts.md, "Files rfmx reads").
//!
//! candle's own reader is not used: a hostile file panics it (`Vec::remove` on a short tuple),
//! makes it allocate what a length field claims (4 GB strings, tensors of any declared shape),
//! grows exponentially through memo copies, and overflows the stack on deeply nested objects.
//! Here values are shared (`Rc`, copy on write), nesting is capped, the work a pickle may cause
//! is proportional to its size, and the storages together may not claim more bytes than the
//! file holds.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

/// Size limit for `data.pkl`: a few hundred bytes per tensor (MusicGen-large's is under 1 MB).
const PICKLE_LIMIT: u64 = crate::fsx::TEXT_LIMIT;
/// Nesting limit for pickled values: a state dict nests 5 deep.
const MAX_DEPTH: u32 = 64;

/// Every tensor of the checkpoint at `path`, on the CPU in its stored dtype, in pickle order.
/// The error says what is wrong, without the path (the caller names the file).
pub fn read_file(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    read(std::io::BufReader::new(f), len)
}

/// [`read_file`] over the bytes of a checkpoint.
pub fn read_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    read(std::io::Cursor::new(bytes), bytes.len() as u64)
}

fn read<R: Read + Seek>(reader: R, file_len: u64) -> Result<Vec<(String, Tensor)>, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
        format!("not a PyTorch zip checkpoint ({e}); checkpoints saved before torch 1.6 are not supported")
    })?;
    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.into_owned())
        .collect();
    let pkl_name = match pickles.as_slice() {
        [one] => one.clone(),
        [] => return Err("no <archive>/data.pkl entry (not a torch.save checkpoint)".into()),
        _ => return Err(format!("{} data.pkl entries, expected one", pickles.len())),
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Some(i) = zip.index_for_name(&format!("{prefix}byteorder")) {
        let order = read_entry(&mut zip, i, 16, file_len)?;
        if order != b"little" {
            return Err(format!(
                "byteorder is {:?}; only little-endian checkpoints are supported",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let i = zip.index_for_name(&pkl_name).ok_or("data.pkl vanished")?;
    let pkl = read_entry(&mut zip, i, PICKLE_LIMIT, file_len)?;
    let root = Machine::new(&pkl)
        .run()
        .map_err(|e| format!("{pkl_name}: {e}"))?;
    let entries = match root {
        Val::Dict(d, _) => d,
        other => {
            return Err(format!(
                "{pkl_name} holds {}, not a state dict",
                other.what()
            ));
        }
    };

    let mut storages: HashMap<Rc<str>, Tensor> = HashMap::new();
    // Bytes materialised so far: the storages plus copies of partial views. A real checkpoint
    // stays under its file length; twice that leaves room for tied slices.
    let mut budget = file_len.saturating_mul(2);
    let mut out = Vec::new();
    for (k, v) in entries.iter() {
        let Val::Str(name) = k else { continue };
        let Some(info) = tensor_info(v).map_err(|e| format!("tensor {name}: {e}"))? else {
            continue;
        };
        let t = materialise(
            &mut zip,
            &prefix,
            &info,
            &mut storages,
            &mut budget,
            file_len,
        )
        .map_err(|e| format!("tensor {name}: {e}"))?;
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// The whole of entry `i`, refused when it claims more than `limit` or `file_len` bytes.
fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    i: usize,
    limit: u64,
    file_len: u64,
) -> Result<Vec<u8>, String> {
    let e = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
    let name = e.name().map(|n| n.into_owned()).unwrap_or_default();
    let size = e.size();
    if size > limit.min(file_len) {
        return Err(format!(
            "{name} claims {size} bytes, over the {}-byte limit",
            limit.min(file_len)
        ));
    }
    read_exactly(e, size, &name)
}

/// The first `n` bytes of the entry `e` (named `name`), `n` already checked against the file.
fn read_exactly(e: impl Read, n: u64, name: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(n as usize);
    e.take(n)
        .read_to_end(&mut buf)
        .map_err(|err| format!("{name}: {err}"))?;
    if buf.len() as u64 != n {
        return Err(format!("{name} is truncated: {} of {n} bytes", buf.len()));
    }
    Ok(buf)
}

/// What `_rebuild_tensor_v2(storage, offset, size, stride, ...)` says about one tensor.
struct TensorInfo {
    dtype: DType,
    key: Rc<str>,
    storage_numel: usize,
    offset: usize,
    shape: Vec<usize>,
    fortran: bool,
}

/// The tensor a state-dict value rebuilds, `None` for values that are not tensors (such as
/// `_metadata`), an error for a tensor rebuild with malformed arguments.
fn tensor_info(v: &Val) -> Result<Option<TensorInfo>, String> {
    let Some((callee, args)) = v.call() else {
        return Ok(None);
    };
    let (callee, args) = match callee.global() {
        // nn.Parameter(data, requires_grad, hooks): the data.
        Some(("torch._utils", "_rebuild_parameter")) => {
            match args.tuple().and_then(|a| a.first()).and_then(Val::call) {
                Some(inner) => inner,
                None => return Err("_rebuild_parameter without a tensor".into()),
            }
        }
        // Tensor subclasses: _rebuild_from_type_v2(func, type, args, state).
        Some(("torch._tensor", "_rebuild_from_type_v2")) => match args.tuple() {
            Some([func, _, inner, ..]) => (func, inner),
            _ => return Err("_rebuild_from_type_v2 with too few arguments".into()),
        },
        _ => (callee, args),
    };
    if callee.global() != Some(("torch._utils", "_rebuild_tensor_v2")) {
        return Ok(None);
    }
    let Some([storage, offset, size, stride, ..]) = args.tuple() else {
        return Err("_rebuild_tensor_v2 with too few arguments".into());
    };
    let Val::PersId(id, _) = storage else {
        return Err("storage is not a persistent id".into());
    };
    let Some([tag, class, key, _location, numel, ..]) = id.tuple() else {
        return Err("storage id is not (\"storage\", type, key, location, numel)".into());
    };
    if !matches!(tag, Val::Str(s) if &**s == "storage") {
        return Err("storage id does not start with \"storage\"".into());
    }
    let class = class
        .global()
        .map(|(_, c)| c)
        .ok_or("storage type is not a class")?;
    let dtype = match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        other => return Err(format!("unsupported storage type {other}")),
    };
    let Val::Str(key) = key else {
        return Err("storage key is not a string".into());
    };
    // Keys name an entry beside data.pkl: decimal in every torch version.
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("bad storage key {:?}", truncate(key)));
    }
    let ints = |v: &Val, what: &str| -> Result<Vec<usize>, String> {
        v.tuple()
            .ok_or_else(|| format!("{what} is not a tuple"))?
            .iter()
            .map(|x| x.usize().ok_or_else(|| format!("{what} holds a non-index")))
            .collect()
    };
    let shape = ints(size, "size")?;
    let stride = ints(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "size has {} dimensions but stride {}",
            shape.len(),
            stride.len()
        ));
    }
    let fortran = if is_contiguous(&shape, &stride, false) {
        false
    } else if is_contiguous(&shape, &stride, true) {
        true
    } else {
        return Err(format!(
            "strided tensor (size {shape:?}, stride {stride:?}) is not supported"
        ));
    };
    Ok(Some(TensorInfo {
        dtype,
        key: key.clone(),
        storage_numel: numel.usize().ok_or("storage size is not an index")?,
        offset: offset.usize().ok_or("storage offset is not an index")?,
        shape,
        fortran,
    }))
}

/// Whether `stride` lays `shape` out densely, last dimension fastest (or first, `fortran`).
fn is_contiguous(shape: &[usize], stride: &[usize], fortran: bool) -> bool {
    let mut want: usize = 1;
    let dims: Box<dyn Iterator<Item = (&usize, &usize)>> = if fortran {
        Box::new(shape.iter().zip(stride))
    } else {
        Box::new(shape.iter().zip(stride).rev())
    };
    for (&n, &s) in dims {
        if n > 1 && s != want {
            return false;
        }
        want = match want.checked_mul(n) {
            Some(w) => w,
            None => return false,
        };
    }
    true
}

fn materialise<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    prefix: &str,
    info: &TensorInfo,
    storages: &mut HashMap<Rc<str>, Tensor>,
    budget: &mut u64,
    file_len: u64,
) -> Result<Tensor, String> {
    let size = info.dtype.size_in_bytes();
    let numel = info
        .shape
        .iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .ok_or("its size overflows")?;
    let end = info
        .offset
        .checked_add(numel)
        .filter(|&e| e <= info.storage_numel)
        .ok_or_else(|| {
            format!(
                "elements {}..{}+{numel} lie outside its storage of {}",
                info.offset, info.offset, info.storage_numel
            )
        })?;
    let storage = match storages.get(&info.key) {
        Some(s) => {
            if s.dtype() != info.dtype || s.elem_count() != info.storage_numel {
                return Err(format!(
                    "storage {} is read with two types or sizes",
                    info.key
                ));
            }
            s.clone()
        }
        None => {
            let bytes = (info.storage_numel as u64)
                .checked_mul(size as u64)
                .filter(|&b| b <= *budget && b <= file_len)
                .ok_or_else(|| {
                    format!(
                        "storage {} claims {} elements of {size} bytes, more than the file's {file_len} bytes hold",
                        info.key, info.storage_numel
                    )
                })?;
            *budget -= bytes;
            let name = format!("{prefix}data/{}", info.key);
            let i = zip
                .index_for_name(&name)
                .ok_or_else(|| format!("its storage {name} is not in the archive"))?;
            let e = zip.by_index(i).map_err(|e| format!("{name}: {e}"))?;
            if e.size() < bytes {
                return Err(format!(
                    "{name} holds {} bytes, its tensors need {bytes}",
                    e.size()
                ));
            }
            let buf = read_exactly(e, bytes, &name)?;
            let t = Tensor::from_raw_buffer(&buf, info.dtype, &[info.storage_numel], &Device::Cpu)
                .map_err(|e| e.to_string())?;
            storages.insert(info.key.clone(), t.clone());
            t
        }
    };
    let mut t = storage
        .narrow(0, info.offset, end - info.offset)
        .map_err(|e| e.to_string())?;
    if numel < info.storage_numel {
        // A slice of a larger storage gets its own buffer, so that moving it to a device does not
        // move the whole storage; counted against the budget like a storage.
        let bytes = (numel * size) as u64;
        if bytes > *budget {
            return Err("its tensors claim more than twice the file's bytes".into());
        }
        *budget -= bytes;
        t = t.copy().map_err(|e| e.to_string())?;
    }
    let r = if info.fortran && info.shape.len() > 1 {
        let rev: Vec<usize> = info.shape.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..rev.len()).rev().collect();
        t.reshape(rev).and_then(|t| t.permute(perm))
    } else {
        t.reshape(info.shape.clone())
    };
    r.map_err(|e| e.to_string())
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A pickled value. Containers are shared (`Rc`; a memo get is a pointer copy, never a deep copy)
/// and carry their nesting depth, capped at [`MAX_DEPTH`] so that neither building nor dropping
/// one can exhaust the stack.
#[derive(Clone)]
enum Val {
    Mark,
    None,
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Global(Rc<(String, String)>),
    Tuple(Rc<Vec<Val>>, u32),
    List(Rc<Vec<Val>>, u32),
    Dict(Rc<Vec<(Val, Val)>>, u32),
    /// `callable(*args)`: REDUCE and NEWOBJ.
    Call(Rc<(Val, Val)>, u32),
    /// BUILD on an object that is not a dict: nothing a state dict is read from.
    Build,
    PersId(Rc<Val>, u32),
}

impl Val {
    fn depth(&self) -> u32 {
        match self {
            Val::Tuple(_, d)
            | Val::List(_, d)
            | Val::Dict(_, d)
            | Val::Call(_, d)
            | Val::PersId(_, d) => *d,
            _ => 0,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Val::Mark => "a mark",
            Val::None => "None",
            Val::Bool => "a bool",
            Val::Int(_) => "an int",
            Val::Float => "a float",
            Val::Str(_) => "a string",
            Val::Global(_) => "a class",
            Val::Tuple(..) => "a tuple",
            Val::List(..) => "a list",
            Val::Dict(..) => "a dict",
            Val::Call(..) => "an object",
            Val::Build => "a built object",
            Val::PersId(..) => "a persistent id",
        }
    }

    fn call(&self) -> Option<(&Val, &Val)> {
        match self {
            Val::Call(c, _) => Some((&c.0, &c.1)),
            _ => None,
        }
    }

    fn global(&self) -> Option<(&str, &str)> {
        match self {
            Val::Global(g) => Some((&g.0, &g.1)),
            _ => None,
        }
    }

    fn tuple(&self) -> Option<&[Val]> {
        match self {
            Val::Tuple(t, _) => Some(t),
            _ => None,
        }
    }

    fn usize(&self) -> Option<usize> {
        match self {
            Val::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// The pickle interpreter over one `data.pkl`, with a work budget proportional to its length.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Val>,
    memo: HashMap<u32, Val>,
    work: u64,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            // Each opcode costs 1 and each element a copy-on-write copies costs 1: a real state
            // dict copies only its empty top dict, so 4 units a byte never stops one.
            work: 4 * data.len() as u64 + 1024,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more bytes)", self.pos))?;
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: u64) -> Result<Val, String> {
        let n = usize::try_from(n).map_err(|_| "string length overflows")?;
        let b = self.bytes(n)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| format!("string at byte {} is not UTF-8", self.pos))?;
        Ok(Val::Str(s.into()))
    }

    fn spend(&mut self, units: usize) -> Result<(), String> {
        self.work = self
            .work
            .checked_sub(units as u64)
            .ok_or("the pickle does more copying than a state dict does")?;
        Ok(())
    }

    fn push(&mut self, v: Val) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Val, String> {
        match self.stack.pop() {
            Some(Val::Mark) => Err(format!("a mark where a value belongs (byte {})", self.pos)),
            Some(v) => Ok(v),
            None => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Val>, String> {
        let i = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Val::Mark))
            .ok_or_else(|| format!("no mark to pop to at byte {}", self.pos))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    fn nested(&self, children: impl IntoIterator<Item = u32>) -> Result<u32, String> {
        let d = children.into_iter().max().unwrap_or(0) + 1;
        if d > MAX_DEPTH {
            return Err(format!(
                "values nest more than {MAX_DEPTH} deep (byte {})",
                self.pos
            ));
        }
        Ok(d)
    }

    fn tuple(&self, items: Vec<Val>) -> Result<Val, String> {
        let d = self.nested(items.iter().map(Val::depth))?;
        Ok(Val::Tuple(Rc::new(items), d))
    }

    fn call(&self, callee: Val, args: Val) -> Result<Val, String> {
        let d = self.nested([callee.depth(), args.depth()])?;
        Ok(Val::Call(Rc::new((callee, args)), d))
    }

    /// Appends to the list or dict on top of the stack (copying it first when the memo shares it).
    fn extend_top(&mut self, items: Vec<Val>, pairs: bool) -> Result<(), String> {
        if pairs && !items.len().is_multiple_of(2) {
            return Err(format!("odd number of dict items at byte {}", self.pos));
        }
        let depth = self.nested(items.iter().map(Val::depth))?;
        let pos = self.pos;
        let top = self
            .stack
            .last_mut()
            .ok_or_else(|| format!("stack underflow at byte {pos}"))?;
        let shared = match top {
            Val::List(l, _) if !pairs && Rc::strong_count(l) > 1 => l.len(),
            Val::Dict(m, _) if pairs && Rc::strong_count(m) > 1 => m.len(),
            _ => 0,
        };
        self.spend(shared)?;
        let top = self.stack.last_mut().expect("checked above");
        match top {
            Val::List(l, d) if !pairs => {
                Rc::make_mut(l).extend(items);
                *d = (*d).max(depth);
            }
            Val::Dict(m, d) if pairs => {
                let mut it = items.into_iter();
                let m = Rc::make_mut(m);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    m.push((k, v));
                }
                *d = (*d).max(depth);
            }
            other => {
                let want = if pairs { "a dict" } else { "a list" };
                return Err(format!(
                    "{want} expected at byte {pos}, found {}",
                    other.what()
                ));
            }
        }
        Ok(())
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let top = self
            .stack
            .last()
            .ok_or_else(|| format!("memo put on an empty stack at byte {}", self.pos))?;
        if matches!(top, Val::Mark) {
            return Err(format!("memo put of a mark at byte {}", self.pos));
        }
        self.memo.insert(id, top.clone());
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&id)
            .ok_or_else(|| format!("memo {id} read before it is written (byte {})", self.pos))?
            .clone();
        self.push(v);
        Ok(())
    }

    /// Runs to STOP and returns the value it leaves.
    fn run(mut self) -> Result<Val, String> {
        loop {
            self.spend(1)?;
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a hint for buffered readers
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Val::Global(Rc::new((module, name))));
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Val::Str(m), Val::Str(n)) => {
                            self.push(Val::Global(Rc::new((m.to_string(), n.to_string()))))
                        }
                        _ => return Err(format!("STACK_GLOBAL without two strings at byte {at}")),
                    }
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Val::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Val::Int(v.into()));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Val::Int(v.into()));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes; wider than i64 is refused.
                    let n = self.u8()? as usize;
                    let b = self.bytes(n)?;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes at byte {at}"));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Val::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    self.le::<8>()?;
                    self.push(Val::Float);
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?);
                    let v = self.text(n.into())?;
                    self.push(v);
                }
                0x8c => {
                    let n = self.u8()?;
                    let v = self.text(n.into())?;
                    self.push(v);
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?);
                    let v = self.text(n)?;
                    self.push(v);
                }
                b'N' => self.push(Val::None),
                0x88 | 0x89 => self.push(Val::Bool),
                b')' => self.push(Val::Tuple(Rc::new(Vec::new()), 1)),
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.tuple(items)?;
                    self.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.tuple(items)?;
                    self.push(v);
                }
                b']' => self.push(Val::List(Rc::new(Vec::new()), 1)),
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'}' => self.push(Val::Dict(Rc::new(Vec::new()), 1)),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Val::Dict(Rc::new(Vec::new()), 1));
                    self.extend_top(items, true)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                b'(' => self.push(Val::Mark),
                b'q' => {
                    let id = self.u8()?;
                    self.memo_put(id.into())?;
                }
                b'r' => {
                    let id = u32::from_le_bytes(self.le()?);
                    self.memo_put(id)?;
                }
                0x94 => {
                    // MEMOIZE: the next free index.
                    let id = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memo_put(id)?;
                }
                b'h' => {
                    let id = self.u8()?;
                    self.memo_get(id.into())?;
                }
                b'j' => {
                    let id = u32::from_le_bytes(self.le()?);
                    self.memo_get(id)?;
                }
                b'Q' => {
                    let id = self.pop()?;
                    let d = self.nested([id.depth()])?;
                    self.push(Val::PersId(Rc::new(id), d));
                }
                b'R' | 0x81 => {
                    // REDUCE and NEWOBJ. OrderedDict() is a dict; anything else stays a call.
                    let args = self.pop()?;
                    let callee = self.pop()?;
                    let v = if matches!(callee.global(), Some(("collections", "OrderedDict"))) {
                        Val::Dict(Rc::new(Vec::new()), 1)
                    } else {
                        self.call(callee, args)?
                    };
                    self.push(v);
                }
                b'b' => {
                    // BUILD: a dict state merges into a dict (OrderedDict's `_metadata`).
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    match (obj, state) {
                        (obj @ Val::Dict(..), Val::Dict(s, _)) => {
                            self.push(obj);
                            let items =
                                s.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
                            self.spend(s.len())?;
                            self.extend_top(items, true)?;
                        }
                        _ => self.push(Val::Build),
                    }
                }
                b'.' => return self.pop(),
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at}"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed checkpoint torch wrote (tied embeddings, `_metadata`) reads to the same
    /// tensors as candle's reader gives.
    #[test]
    fn reads_a_torch_checkpoint_like_candle() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/t5/tiny_musicgen_bin/pytorch_model.bin");
        let ours = read_file(&f).unwrap();
        let theirs: HashMap<String, Tensor> = candle_core::pickle::read_all(&f)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(ours.len(), theirs.len());
        assert!(ours.len() > 100, "{}", ours.len());
        for (name, t) in &ours {
            let c = &theirs[name];
            assert_eq!(t.dims(), c.dims(), "{name}");
            assert_eq!(t.dtype(), c.dtype(), "{name}");
            let values = |x: &Tensor| {
                x.flatten_all()
                    .and_then(|x| x.to_dtype(DType::F64))
                    .and_then(|x| x.to_vec1::<f64>())
                    .unwrap()
            };
            assert_eq!(values(t), values(c), "{name}");
        }
    }

    /// A pickle of `n` nested one-tuples: refused at the cap instead of overflowing the stack.
    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, 100_000));
        p.push(b'.');
        let e = Machine::new(&p).run().err().unwrap();
        assert!(e.contains("nest more than 64 deep"), "{e}");
    }

    /// Memo gets that would double a value on every step (a "billion laughs": 2^60 leaves if
    /// copied) cost one pointer each, so the pickle runs in time proportional to its length.
    #[test]
    fn memo_doubling_stays_linear() {
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..60 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let root = Machine::new(&p).run().unwrap();
        assert_eq!(root.depth(), 61);
    }

    #[test]
    fn huge_string_lengths_are_checked_against_the_bytes() {
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.extend(b"abc.");
        let e = Machine::new(&p).run().err().unwrap();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn short_rebuild_tuples_are_errors_not_panics() {
        // {"w": _rebuild_tensor_v2(())}
        let mut p = vec![0x80, 2, b'}', b'X'];
        p.extend(1u32.to_le_bytes());
        p.push(b'w');
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
        p.extend([b')', b'R', b's', b'.']);
        let root = Machine::new(&p).run().unwrap();
        let Val::Dict(d, _) = root else { panic!() };
        let e = tensor_info(&d[0].1).err().unwrap();
        assert!(e.contains("too few arguments"), "{e}");
    }
}
