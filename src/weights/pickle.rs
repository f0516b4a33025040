//! A minimal pickle reader for `torch.save`'d state dicts.
//!
//! It never runs Python: opcodes build a small value tree, and only the few callables a
//! state dict uses are understood (`collections.OrderedDict`, `torch._utils.
//! _rebuild_tensor_v2/_v3`, `_rebuild_parameter[_with_state]`, `torch._tensor.
//! _rebuild_from_type_v2`, `torch.Size`, `_codecs.encode`). Anything else is an error
//! that names the Python object, never a panic.
//!
//! What torch writes (checked against torch 2.x, see `tests/data/make_weight_files.py`):
//! protocol 2 (`torch.serialization.DEFAULT_PROTOCOL`), a `collections.OrderedDict`
//! built by REDUCE and filled by SETITEMS, a BUILD that sets its `_metadata`, and each
//! tensor as `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
//! requires_grad, backward_hooks)` whose storage is a persistent id
//! `('storage', torch.FloatStorage, '0', 'cpu', numel)` (typed storage classes
//! `FloatStorage`, `HalfStorage`, `BFloat16Storage`, ...; newer dtypes such as uint16 or
//! float8 use `_rebuild_tensor_v3` with `torch.UntypedStorage` and a dtype argument).
//! Opcode reference: CPython `Lib/pickletools.py`.

use std::collections::HashMap;

use super::{DType, WeightError};

/// Index of a value in [`Pickle::nodes`]. Containers refer to their items by id, which
/// gives Python's reference semantics: a memoized dict filled later is the same dict.
pub type NodeId = usize;

/// A pickled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    /// Dicts and `OrderedDict`s, items in insertion order.
    Dict(Vec<(NodeId, NodeId)>),
    /// A reference to a Python object by name (`GLOBAL` / `STACK_GLOBAL`), not yet applied.
    Global {
        module: String,
        name: String,
    },
    /// A tensor storage (from a persistent id).
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// A tensor storage: the zip entry `<archive>/data/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The storage's element type (`U8` for an untyped storage).
    pub dtype: DType,
    /// The Python storage class name, e.g. `FloatStorage`.
    pub class: String,
    pub key: String,
    /// Device it was saved from, e.g. `cpu` or `cuda:0` (irrelevant here).
    pub location: String,
    /// Number of `dtype` elements in the storage.
    pub numel: usize,
}

/// A tensor view on a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub dtype: DType,
    /// Offset into the storage, in elements of `dtype`.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A parsed pickle: every value, and the one `STOP` returned.
#[derive(Debug, Clone)]
pub struct Pickle {
    pub nodes: Vec<Value>,
    pub root: NodeId,
}

impl Pickle {
    pub fn get(&self, id: NodeId) -> &Value {
        &self.nodes[id]
    }
}

/// Parses pickle bytes. `file` and `entry` name them for errors.
pub fn parse(file: &str, entry: &str, data: &[u8]) -> Result<Pickle, WeightError> {
    Machine {
        file,
        entry,
        data,
        pos: 0,
        op_pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    file: &'a str,
    entry: &'a str,
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode starts (for errors).
    op_pos: usize,
    nodes: Vec<Value>,
    stack: Vec<NodeId>,
    marks: Vec<usize>,
    memo: HashMap<u32, NodeId>,
}

impl<'a> Machine<'a> {
    fn corrupt(&self, what: impl std::fmt::Display) -> WeightError {
        WeightError::Corrupt {
            file: self.file.to_owned(),
            detail: format!(
                "`{}` is not a readable pickle at byte {}: {what}",
                self.entry, self.op_pos
            ),
        }
    }

    fn unsupported(&self, what: String) -> WeightError {
        WeightError::Unsupported {
            file: self.file.to_owned(),
            what,
            hint: "only plain state dicts of tensors can be read: save `model.state_dict()` rather than a whole model or other objects, or convert the file to safetensors".into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightError> {
        let data = self.data;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| data.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.corrupt(format_args!(
                "it ends in the middle of an opcode (needs {n} more bytes, {} left)",
                data.len() - self.pos.min(data.len())
            ))),
        }
    }
    fn u8(&mut self) -> Result<u8, WeightError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WeightError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WeightError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WeightError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn len_u64(&mut self) -> Result<usize, WeightError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.corrupt(format_args!("a length of {n} bytes")))
    }
    fn line(&mut self) -> Result<&'a str, WeightError> {
        let data = self.data;
        let rest = &data[self.pos.min(data.len())..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.corrupt("a name line has no end"))?;
        self.pos += nl + 1;
        std::str::from_utf8(&rest[..nl]).map_err(|_| self.corrupt("a name is not UTF-8"))
    }
    fn string(&self, bytes: &[u8]) -> Result<String, WeightError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a string is not valid UTF-8"))
    }

    fn push(&mut self, v: Value) -> NodeId {
        self.nodes.push(v);
        let id = self.nodes.len() - 1;
        self.stack.push(id);
        id
    }
    fn new_node(&mut self, v: Value) -> NodeId {
        self.nodes.push(v);
        self.nodes.len() - 1
    }
    fn pop(&mut self) -> Result<NodeId, WeightError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.corrupt("an opcode pops past a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.corrupt("an opcode pops an empty stack"))
    }
    fn top(&self) -> Result<NodeId, WeightError> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.corrupt("an opcode needs a value but the stack is empty"))
    }
    fn pop_mark(&mut self) -> Result<Vec<NodeId>, WeightError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.corrupt("an opcode needs a MARK but there is none"))?;
        if m > self.stack.len() {
            return Err(self.corrupt("the stack shrank below a MARK"));
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&self, key: u32) -> Result<NodeId, WeightError> {
        self.memo.get(&key).copied().ok_or_else(|| {
            self.corrupt(format_args!("memo slot {key} is read before it is written"))
        })
    }

    fn run(mut self) -> Result<Pickle, WeightError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(
                            self.unsupported(format!("pickle protocol {p} in `{}`", self.entry))
                        );
                    }
                }
                0x95 => {
                    // FRAME: a length prefix only; opcodes continue inside it.
                    self.u64()?;
                }
                b'.' => {
                    // STOP
                    let root = self.pop()?;
                    return Ok(Pickle {
                        nodes: self.nodes,
                        root,
                    });
                }
                b'(' => self.marks.push(self.stack.len()), // MARK
                b'}' => _ = self.push(Value::Dict(Vec::new())), // EMPTY_DICT
                b']' => _ = self.push(Value::List(Vec::new())), // EMPTY_LIST
                b')' => _ = self.push(Value::Tuple(Vec::new())), // EMPTY_TUPLE
                b'N' => _ = self.push(Value::None),
                0x88 => _ = self.push(Value::Bool(true)), // NEWTRUE
                0x89 => _ = self.push(Value::Bool(false)), // NEWFALSE
                b'0' => _ = self.pop()?,                  // POP
                b'1' => _ = self.pop_mark()?,             // POP_MARK
                b'2' => {
                    // DUP
                    let t = self.top()?;
                    self.stack.push(t);
                }
                // Memo.
                b'q' => {
                    // BINPUT
                    let k = self.u8()?;
                    let t = self.top()?;
                    self.memo.insert(u32::from(k), t);
                }
                b'r' => {
                    // LONG_BINPUT
                    let k = self.u32()?;
                    let t = self.top()?;
                    self.memo.insert(k, t);
                }
                0x94 => {
                    // MEMOIZE
                    let t = self.top()?;
                    let k = u32::try_from(self.memo.len())
                        .map_err(|_| self.corrupt("too many memo slots"))?;
                    self.memo.insert(k, t);
                }
                b'h' => {
                    // BINGET
                    let k = self.u8()?;
                    let id = self.memo_get(u32::from(k))?;
                    self.stack.push(id);
                }
                b'j' => {
                    // LONG_BINGET
                    let k = self.u32()?;
                    let id = self.memo_get(k)?;
                    self.stack.push(id);
                }
                // Numbers.
                b'J' => {
                    // BININT: signed 32-bit
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?; // BININT1
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?; // BININT2
                    self.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement of n bytes
                    let n = if op == 0x8a {
                        usize::from(self.u8()?)
                    } else {
                        self.u32()? as usize
                    };
                    let b = self.take(n)?;
                    let v = self.long(b)?;
                    self.push(Value::Int(v));
                }
                b'G' => {
                    // BINFLOAT: big-endian f64
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(
                        b.try_into().expect("8 bytes"),
                    )));
                }
                // Strings and bytes.
                b'X' => {
                    let n = self.u32()? as usize; // BINUNICODE
                    let b = self.take(n)?;
                    let s = self.string(b)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = usize::from(self.u8()?); // SHORT_BINUNICODE
                    let b = self.take(n)?;
                    let s = self.string(b)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.len_u64()?; // BINUNICODE8
                    let b = self.take(n)?;
                    let s = self.string(b)?;
                    self.push(Value::Str(s));
                }
                b'T' | b'U' => {
                    // BINSTRING / SHORT_BINSTRING (Python 2 str): text if UTF-8, else bytes
                    let n = if op == b'T' {
                        self.u32()? as usize
                    } else {
                        usize::from(self.u8()?)
                    };
                    let b = self.take(n)?;
                    let v = match std::str::from_utf8(b) {
                        Ok(s) => Value::Str(s.to_owned()),
                        Err(_) => Value::Bytes(b.to_vec()),
                    };
                    self.push(v);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    // BINBYTES / SHORT_BINBYTES / BINBYTES8 / BYTEARRAY8
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => usize::from(self.u8()?),
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.to_vec()));
                }
                // Tuples, lists, dicts.
                b't' => {
                    let items = self.pop_mark()?; // TUPLE
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    // TUPLE1 / TUPLE2 / TUPLE3
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.corrupt("TUPLEn with too few values on the stack"));
                    }
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push(Value::Tuple(items));
                }
                b'a' => {
                    // APPEND
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![v])?;
                }
                b'e' => {
                    // APPENDS
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?;
                }
                b's' => {
                    // SETITEM
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    // SETITEMS
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return Err(self.corrupt("SETITEMS with an odd number of values"));
                    }
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                // Objects.
                b'c' => {
                    // GLOBAL "module\nname\n"
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.nodes[module], &self.nodes[name]) {
                        (Value::Str(m), Value::Str(n)) => {
                            let v = Value::Global {
                                module: m.clone(),
                                name: n.clone(),
                            };
                            self.push(v);
                        }
                        _ => return Err(self.corrupt("STACK_GLOBAL without two strings")),
                    }
                }
                b'R' | 0x81 => {
                    // REDUCE: callable(*args) / NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.apply(callable, args, 0)?;
                    self.stack.push(v);
                }
                0x92 => {
                    // NEWOBJ_EX: cls, args, kwargs
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    if !matches!(&self.nodes[kwargs], Value::Dict(d) if d.is_empty()) {
                        return Err(self.unsupported("NEWOBJ_EX with keyword arguments".into()));
                    }
                    let v = self.apply(cls, args, 0)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: sets an object's state (OrderedDict `_metadata`, tensor
                    // attributes). Nothing of it matters for the weights.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    // BINPERSID
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push(Value::Storage(storage));
                }
                other => {
                    return Err(self.unsupported(format!(
                        "pickle opcode 0x{other:02x} (at byte {} of `{}`), which torch state dicts do not use",
                        self.op_pos, self.entry
                    )));
                }
            }
        }
    }

    fn long(&self, b: &[u8]) -> Result<i64, WeightError> {
        if b.is_empty() {
            return Ok(0);
        }
        let negative = b[b.len() - 1] & 0x80 != 0;
        let fill = if negative { 0xff } else { 0 };
        if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
            return Err(self.unsupported("an integer wider than 64 bits".into()));
        }
        let mut buf = [fill; 8];
        let n = b.len().min(8);
        buf[..n].copy_from_slice(&b[..n]);
        Ok(i64::from_le_bytes(buf))
    }

    fn extend_list(&mut self, list: NodeId, items: Vec<NodeId>) -> Result<(), WeightError> {
        match &mut self.nodes[list] {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.corrupt("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, dict: NodeId, kv: Vec<NodeId>) -> Result<(), WeightError> {
        match &mut self.nodes[dict] {
            Value::Dict(d) => {
                d.extend(kv.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            _ => Err(self.corrupt("SETITEM on something that is not a dict")),
        }
    }

    fn tuple(&self, id: NodeId, what: &str) -> Result<Vec<NodeId>, WeightError> {
        match &self.nodes[id] {
            Value::Tuple(t) => Ok(t.clone()),
            _ => Err(self.corrupt(format_args!("{what} is not a tuple"))),
        }
    }
    fn uint(&self, id: NodeId, what: &str) -> Result<usize, WeightError> {
        match &self.nodes[id] {
            Value::Int(v) if *v >= 0 => usize::try_from(*v)
                .map_err(|_| self.corrupt(format_args!("{what} {v} is too large"))),
            other => Err(self.corrupt(format_args!(
                "{what} is {other:?}, not a non-negative integer"
            ))),
        }
    }
    fn uint_tuple(&self, id: NodeId, what: &str) -> Result<Vec<usize>, WeightError> {
        self.tuple(id, what)?
            .into_iter()
            .map(|i| self.uint(i, what))
            .collect()
    }

    /// `('storage', storage_type, key, location, numel)` → a storage reference.
    fn persistent_load(&self, pid: NodeId) -> Result<StorageRef, WeightError> {
        let t = self.tuple(pid, "a persistent id")?;
        let tag = t.first().map(|&i| &self.nodes[i]);
        if t.len() != 5 || !matches!(tag, Some(Value::Str(s)) if s == "storage") {
            return Err(self.unsupported(format!(
                "a persistent id {:?} that is not a torch storage",
                tag
            )));
        }
        let class = match &self.nodes[t[1]] {
            // `torch.FloatStorage`, ...; `torch.storage.UntypedStorage` for v3 tensors.
            Value::Global { module, name } if module == "torch" || module == "torch.storage" => {
                name.clone()
            }
            Value::Global { module, name } => {
                return Err(self.unsupported(format!("the storage type `{module}.{name}`")));
            }
            other => {
                return Err(self.corrupt(format_args!("storage type {other:?} is not a class")));
            }
        };
        let dtype = DType::from_torch_storage(&class)
            .ok_or_else(|| self.unsupported(format!("tensors stored as `torch.{class}`")))?;
        let key = match &self.nodes[t[2]] {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => {
                return Err(self.corrupt(format_args!("storage key {other:?} is not a string")));
            }
        };
        let location = match &self.nodes[t[3]] {
            Value::Str(s) => s.clone(),
            _ => String::new(),
        };
        let numel = self.uint(t[4], "a storage size")?;
        Ok(StorageRef {
            dtype,
            class,
            key,
            location,
            numel,
        })
    }

    /// Applies a callable to an args tuple, for the few callables torch state dicts use.
    fn apply(&mut self, callable: NodeId, args: NodeId, depth: u32) -> Result<NodeId, WeightError> {
        if depth > 4 {
            return Err(self.corrupt("tensor rebuild functions nest too deeply"));
        }
        let (module, name) = match &self.nodes[callable] {
            Value::Global { module, name } => (module.clone(), name.clone()),
            other => {
                return Err(
                    self.corrupt(format_args!("REDUCE on {other:?}, which is not a callable"))
                );
            }
        };
        let a = self.tuple(args, &format!("the arguments of `{module}.{name}`"))?;
        let arity = |ok: &[usize]| -> Result<(), WeightError> {
            if ok.contains(&a.len()) {
                Ok(())
            } else {
                Err(self.corrupt(format_args!(
                    "`{module}.{name}` is called with {} arguments, expected {ok:?}",
                    a.len()
                )))
            }
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                arity(&[0, 1])?;
                let mut items = Vec::new();
                if let Some(&src) = a.first() {
                    match self.nodes[src].clone() {
                        Value::Dict(d) => items = d,
                        Value::List(pairs) | Value::Tuple(pairs) => {
                            for p in pairs {
                                let kv = self.tuple(p, "an OrderedDict item")?;
                                if kv.len() != 2 {
                                    return Err(self.corrupt("an OrderedDict item is not a pair"));
                                }
                                items.push((kv[0], kv[1]));
                            }
                        }
                        _ => {
                            return Err(self.unsupported(format!(
                                "`{module}.{name}` built from something other than pairs"
                            )));
                        }
                    }
                }
                Ok(self.new_node(Value::Dict(items)))
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor_v3") => {
                let v3 = name.ends_with("v3");
                if v3 {
                    arity(&[7, 8])?
                } else {
                    arity(&[6, 7])?
                };
                let storage = match &self.nodes[a[0]] {
                    Value::Storage(s) => s.clone(),
                    other => {
                        return Err(self.corrupt(format_args!("a tensor's storage is {other:?}")));
                    }
                };
                let offset = self.uint(a[1], "a storage offset")?;
                let shape = self.uint_tuple(a[2], "a tensor size")?;
                let stride = self.uint_tuple(a[3], "a tensor stride")?;
                if shape.len() != stride.len() {
                    return Err(self.corrupt(format_args!(
                        "a tensor has size {shape:?} but stride {stride:?}"
                    )));
                }
                let dtype = if v3 {
                    match &self.nodes[a[6]] {
                        Value::Global { module, name } if module == "torch" => {
                            DType::from_torch_dtype(name).ok_or_else(|| {
                                self.unsupported(format!("tensors of dtype `torch.{name}`"))
                            })?
                        }
                        other => {
                            return Err(self.corrupt(format_args!("a tensor dtype is {other:?}")));
                        }
                    }
                } else {
                    storage.dtype
                };
                Ok(self.new_node(Value::Tensor(TensorRef {
                    storage,
                    dtype,
                    offset,
                    shape,
                    stride,
                })))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => {
                if name.ends_with("state") {
                    arity(&[4])?
                } else {
                    arity(&[3])?
                };
                match &self.nodes[a[0]] {
                    Value::Tensor(_) => Ok(a[0]),
                    other => {
                        Err(self.corrupt(format_args!("a parameter wraps {other:?}, not a tensor")))
                    }
                }
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, new_type, args, state): a tensor (sub)class with Python state.
                arity(&[4])?;
                match &self.nodes[a[1]] {
                    Value::Global { module, name }
                        if (module == "torch" && name == "Tensor")
                            || (module == "torch.nn.parameter" && name == "Parameter") => {}
                    Value::Global { module, name } => {
                        return Err(
                            self.unsupported(format!("the tensor subclass `{module}.{name}`"))
                        );
                    }
                    other => return Err(self.corrupt(format_args!("a tensor type is {other:?}"))),
                }
                self.apply(a[0], a[2], depth + 1)
            }
            ("torch", "Size") => {
                arity(&[0, 1])?;
                match a.first() {
                    Some(&t) => Ok(t),
                    None => Ok(self.new_node(Value::Tuple(Vec::new()))),
                }
            }
            ("_codecs", "encode") => {
                // How protocol 2 pickles `bytes`: _codecs.encode(text, 'latin1').
                arity(&[1, 2])?;
                match &self.nodes[a[0]] {
                    Value::Str(s) => {
                        let bytes: Option<Vec<u8>> =
                            s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                        let bytes = bytes.ok_or_else(|| {
                            self.corrupt("a latin-1 bytes string has wider characters")
                        })?;
                        Ok(self.new_node(Value::Bytes(bytes)))
                    }
                    other => Err(self.corrupt(format_args!("_codecs.encode of {other:?}"))),
                }
            }
            _ => Err(self.unsupported(format!(
                "the Python object `{module}.{name}` in `{}`",
                self.entry
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Pickle, WeightError> {
        parse("f.bin", "archive/data.pkl", bytes)
    }

    #[test]
    fn unknown_globals_are_named_not_run() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let msg = run(p).unwrap_err().to_string();
        assert!(
            msg.contains("`os.system`") && msg.contains("f.bin"),
            "{msg}"
        );
    }

    /// What a hostile checkpoint's pickle calls instead of torch's rebuild functions:
    /// every one refused by name, whether it comes by `GLOBAL` or `STACK_GLOBAL`, and
    /// never called (nothing here can call anything: only the rebuild functions are
    /// ever interpreted).
    #[test]
    fn hostile_globals_are_refused_by_both_opcodes() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("__builtin__", "eval"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("torch._utils", "_rebuild_parameter_with_state"),
            ("numpy.core.multiarray", "_reconstruct"),
        ] {
            // GLOBAL 'module\nname\n', a 1-tuple argument, REDUCE, STOP
            let mut g = b"\x80\x02c".to_vec();
            g.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            g.extend_from_slice(b"X\x02\x00\x00\x00ls\x85R.");
            // SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL, ...
            let mut sg = b"\x80\x04".to_vec();
            for part in [module, name] {
                sg.push(0x8c);
                sg.push(part.len() as u8);
                sg.extend_from_slice(part.as_bytes());
            }
            sg.extend_from_slice(b"\x93X\x02\x00\x00\x00ls\x85R.");
            for (how, p) in [("GLOBAL", g), ("STACK_GLOBAL", sg)] {
                let msg = match run(&p) {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("{how} {module}.{name} was accepted"),
                };
                assert!(
                    msg.contains(&format!("`{module}.{name}`")) && msg.contains("f.bin"),
                    "{how} {module}.{name}: {msg}"
                );
            }
        }
    }

    #[test]
    fn memo_keeps_reference_semantics() {
        // root = {'a': inner}; inner fetched again from the memo and filled afterwards.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01uh\x01X\x01\x00\x00\x00bK\x05s0.";
        let pk = run(p).unwrap();
        let Value::Dict(root) = pk.get(pk.root) else {
            panic!()
        };
        let Value::Dict(inner) = pk.get(root[0].1) else {
            panic!()
        };
        assert_eq!(pk.get(inner[0].1), &Value::Int(5));
    }

    #[test]
    fn long_integers() {
        let v = |p: &[u8]| run(p).map(|pk| pk.get(pk.root).clone());
        assert_eq!(v(b"\x8a\x02\x00\x80.").unwrap(), Value::Int(-32768));
        assert_eq!(v(b"\x8a\x00.").unwrap(), Value::Int(0));
        assert_eq!(
            v(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.").unwrap(),
            Value::Int(-1)
        );
        assert!(v(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").is_err());
        assert_eq!(v(b"J\xfe\xff\xff\xff.").unwrap(), Value::Int(-2));
    }

    #[test]
    fn malformed_pickles_are_errors() {
        let good = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01uh\x01X\x01\x00\x00\x00bK\x05s0.";
        for len in 0..good.len() {
            assert!(run(&good[..len]).is_err(), "cut at {len}");
        }
        for bad in [
            &b"(0."[..],
            b"h\x07.",
            b"\x80\x09.",
            b"]K\x01s.",
            b"a.",
            b"K\x01K\x02s.",
            b"Q.",
            b"\x00",
        ] {
            let e = run(bad);
            assert!(e.is_err(), "{bad:?} parsed: {:?}", e.map(|p| p.nodes));
        }
    }

    #[test]
    fn tensor_subclass_wrappers_unwrap() {
        // torch._tensor._rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, (args), {})
        let mut p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n(".to_vec();
        p.extend(b"(X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ");
        p.extend(b"K\x01K\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt}tR.");
        let pk = run(&p).unwrap();
        let Value::Tensor(t) = pk.get(pk.root) else {
            panic!("{:?}", pk.get(pk.root))
        };
        assert_eq!(
            (t.dtype, t.offset, &t.shape[..], &t.stride[..]),
            (DType::F16, 1, &[3][..], &[1][..])
        );
        assert_eq!(t.storage.numel, 4);
    }
}
