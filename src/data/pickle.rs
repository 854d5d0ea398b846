//! A small unpickler for the dataset files researchers have on disk: CIFAR-10/100 "python"
//! batches and ImageNet16's batches, pickled by Python 2 (`cPickle`, protocol 2) or Python 3
//! (protocols 2–5), holding dicts of lists, strings and numpy arrays.
//!
//! It runs the pickle virtual machine over the opcodes these files use and builds plain
//! [`Value`]s; classes are never instantiated — a `GLOBAL` + `REDUCE` + `BUILD` sequence stays a
//! [`Value::Reduce`] record that [`Value::ndarray`] recognises as a numpy array
//! (`numpy.core.multiarray._reconstruct` with its `__setstate__` tuple, or protocol 5's
//! `numpy.core.numeric._frombuffer`). Python 2 `str` is kept as bytes (what
//! `pickle.load(f, encoding="latin1")` would decode losslessly).

use std::collections::HashMap;
use std::sync::Arc;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Python 3 `bytes`, Python 2 `str`.
    Bytes(Arc<[u8]>),
    /// Python 3 `str`, Python 2 `unicode`.
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name`, as `GLOBAL`/`STACK_GLOBAL` push it.
    Global(String, String),
    /// `func(*args)` with the `__setstate__` argument of a later `BUILD`.
    Reduce {
        func: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
}

/// A numpy array's element type, shape and raw little-endian bytes (C order).
#[derive(Debug, Clone)]
pub struct NdArray {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Arc<[u8]>,
}

impl NdArray {
    /// Elements as u8 (dtype `u1`/`|u1`/`uint8`).
    pub fn as_u8(&self) -> Result<&[u8], String> {
        match self.dtype.trim_start_matches(['|', '<', '=']) {
            "u1" | "uint8" | "b1" => Ok(&self.data),
            d => Err(format!("expected a uint8 array, found dtype {d}")),
        }
    }

    /// Elements as i64 from any little-endian integer dtype.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let d = self.dtype.trim_start_matches(['|', '<', '=']);
        let b = &self.data;
        Ok(match d {
            "u1" | "uint8" => b.iter().map(|&x| x as i64).collect(),
            "i1" | "int8" => b.iter().map(|&x| x as i8 as i64).collect(),
            "i2" | "int16" => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            "u2" | "uint16" => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            "i4" | "int32" => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            "u4" | "uint32" => b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            "i8" | "int64" => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => return Err(format!("expected an integer array, found dtype {d}")),
        })
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Value {
    /// Look up `key` in a dict, matching Python 2 byte strings and Python 3 strings alike.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a `Str` or (ASCII/UTF-8) `Bytes`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Integers of a list, a tuple or an integer numpy array.
    pub fn to_ints(&self) -> Result<Vec<i64>, String> {
        match self {
            Value::List(xs) | Value::Tuple(xs) => xs
                .iter()
                .enumerate()
                .map(|(i, x)| x.as_int().ok_or_else(|| format!("element {i} is not an integer")))
                .collect(),
            _ => self.ndarray()?.to_i64(),
        }
    }

    /// Interpret a reconstructed numpy array.
    pub fn ndarray(&self) -> Result<NdArray, String> {
        let Value::Reduce { func, args, state } = self else {
            return Err("not a numpy array".into());
        };
        let Value::Global(module, name) = func.as_ref() else {
            return Err("not a numpy array".into());
        };
        let numpy = module.starts_with("numpy");
        match name.as_str() {
            // ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b') then
            // __setstate__((version, shape, dtype, is_fortran, raw)).
            "_reconstruct" if numpy => {
                let Some(Value::Tuple(st)) = state.as_deref() else {
                    return Err("numpy array without its state".into());
                };
                let st = if st.len() == 5 { &st[1..] } else { &st[..] };
                let [shape, dtype, fortran, raw] = st else {
                    return Err(format!("numpy array state of {} items", st.len()));
                };
                if fortran.as_int() == Some(1) {
                    return Err("Fortran-ordered numpy arrays are not supported".into());
                }
                let shape = shape_of(shape)?;
                let data = match raw {
                    Value::Bytes(b) => b.clone(),
                    Value::Str(s) => latin1(s)?,
                    _ => return Err("numpy array data is not a byte string (object arrays are not supported)".into()),
                };
                finish(dtype_of(dtype)?, shape, data)
            }
            // Protocol 5: _frombuffer(buffer, dtype, shape, order).
            "_frombuffer" if numpy => {
                let Value::Tuple(a) = args.as_ref() else { return Err("bad _frombuffer arguments".into()) };
                let [buf, dtype, shape, order] = &a[..] else { return Err("bad _frombuffer arguments".into()) };
                if order.as_text() == Some("F") {
                    return Err("Fortran-ordered numpy arrays are not supported".into());
                }
                let Value::Bytes(data) = buf else { return Err("numpy buffer is not in-band".into()) };
                finish(dtype_of(dtype)?, shape_of(shape)?, data.clone())
            }
            _ => Err(format!("not a numpy array ({module}.{name})")),
        }
    }
}

fn latin1(s: &str) -> Result<Arc<[u8]>, String> {
    s.chars()
        .map(|c| u8::try_from(c as u32).map_err(|_| "numpy data string is not latin-1".to_string()))
        .collect::<Result<Vec<u8>, _>>()
        .map(Arc::from)
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs
            .iter()
            .map(|x| x.as_int().filter(|&i| i >= 0).map(|i| i as usize).ok_or_else(|| "bad numpy shape".to_string()))
            .collect(),
        _ => Err("bad numpy shape".into()),
    }
}

/// `numpy.dtype('u1', False, True)` with state `(3, '|', None, ...)`: the type code and byte
/// order. Big-endian arrays are refused (no file of ours has one).
fn dtype_of(v: &Value) -> Result<String, String> {
    let Value::Reduce { args, state, .. } = v else { return Err("bad numpy dtype".into()) };
    let code = match args.as_ref() {
        Value::Tuple(a) => a.first().and_then(Value::as_text).ok_or("bad numpy dtype")?.to_string(),
        _ => return Err("bad numpy dtype".into()),
    };
    if let Some(Value::Tuple(st)) = state.as_deref() {
        if st.get(1).and_then(Value::as_text) == Some(">") {
            return Err(format!("big-endian numpy dtype >{code} is not supported"));
        }
    }
    Ok(code)
}

fn finish(dtype: String, shape: Vec<usize>, data: Arc<[u8]>) -> Result<NdArray, String> {
    let width = match dtype.trim_start_matches(['|', '<', '=']) {
        "u1" | "i1" | "b1" | "uint8" | "int8" => 1,
        "u2" | "i2" | "uint16" | "int16" => 2,
        "u4" | "i4" | "f4" | "uint32" | "int32" | "float32" => 4,
        "u8" | "i8" | "f8" | "uint64" | "int64" | "float64" => 8,
        d => return Err(format!("unsupported numpy dtype {d}")),
    };
    let n: usize = shape.iter().product();
    if data.len() != n * width {
        return Err(format!(
            "numpy array of shape {shape:?} and dtype {dtype} holds {} bytes, expected {}",
            data.len(),
            n * width
        ));
    }
    Ok(NdArray { dtype, shape, data })
}

/// Why a pickle could not be read, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub msg: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.msg)
    }
}

enum Item {
    Mark,
    V(Value),
}

struct Machine<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed (for messages).
    at: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
}

/// Unpickle one object from `buf`.
pub fn loads(buf: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine { buf, pos: 0, at: 0, stack: Vec::new(), memo: HashMap::new() };
    m.run()
}

impl<'a> Machine<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError { offset: self.at, msg: msg.into() })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if self.buf.len() - self.pos < n {
            return Err(PickleError {
                offset: self.buf.len(),
                msg: format!("truncated: needs {n} more bytes at byte {}", self.pos),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(PickleError { offset: self.buf.len(), msg: "truncated: unterminated text line".into() });
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.err("text line is not UTF-8"))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Item::V(v));
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => self.err("unexpected mark"),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        let at = self.at;
        match self.stack.last_mut() {
            Some(Item::V(v)) => Ok(v),
            _ => Err(PickleError { offset: at, msg: "stack underflow".into() }),
        }
    }

    /// Values above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(k) = self.stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return self.err("no mark on the stack");
        };
        let items = self.stack.split_off(k + 1);
        self.stack.pop();
        Ok(items.into_iter().map(|i| if let Item::V(v) = i { v } else { unreachable!() }).collect())
    }

    fn bytes(&mut self, n: usize) -> Result<Value, PickleError> {
        Ok(Value::Bytes(Arc::from(self.take(n)?)))
    }

    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s.to_string())),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn memo_get(&self, k: u32) -> Result<Value, PickleError> {
        match self.memo.get(&k) {
            Some(v) => Ok(v.clone()),
            None => self.err(format!("memo key {k} is not defined")),
        }
    }

    fn memo_put(&mut self, k: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(k, v);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(Value::Int(v))
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Value::Int(v))
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.push(Value::Int(v))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    if n > 8 {
                        return self.err(format!("integer of {n} bytes is too large"));
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n); // two's complement of n bytes
                    }
                    self.push(Value::Int(v))
                }
                b'I' | b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = match s {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => match s.parse() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.err(format!("bad integer {s:?}")),
                        },
                    };
                    self.push(v)
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))
                }
                b'F' => {
                    let s = self.line()?;
                    match s.parse() {
                        Ok(f) => self.push(Value::Float(f)),
                        Err(_) => return self.err(format!("bad float {s:?}")),
                    }
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)
                }
                0x8e | 0x96 => {
                    let n = self.u64()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v)
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let v = self.text(n)?;
                    self.push(v)
                }
                b'S' => {
                    // Protocol 0 quoted string; only plain (escape-free) ones are handled.
                    let s = self.line()?;
                    let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or("");
                    if inner.contains('\\') {
                        return self.err("escaped protocol-0 strings are not supported");
                    }
                    self.push(Value::Bytes(Arc::from(inner.as_bytes())))
                }
                b'V' => {
                    let s = self.line()?.to_string();
                    self.push(Value::Str(s))
                }
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.pairs(items)?;
                    self.push(Value::Dict(d))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return self.err("APPEND to a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return self.err("APPENDS to a non-list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return self.err("SETITEM on a non-dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return self.err("SETITEMS on a non-dict"),
                    }
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_text(), name.as_text()) {
                        (Some(m), Some(n)) => self.push(Value::Global(m.to_string(), n.to_string())),
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    // Python 3 writes `bytes` at protocol 2 as `_codecs.encode(text, 'latin1')`.
                    if let (Value::Global(m, n), Value::Tuple(a)) = (&func, &args) {
                        if m == "_codecs" && n == "encode" {
                            if let [Value::Str(text), enc] = &a[..] {
                                if enc.as_text() == Some("latin1") {
                                    match latin1(text) {
                                        Ok(b) => self.push(Value::Bytes(b)),
                                        Err(e) => return self.err(e),
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                    self.push(Value::Reduce { func: Box::new(func), args: Box::new(args), state: None })
                }
                b'b' => {
                    let st = self.pop()?;
                    match self.top()? {
                        Value::Reduce { state, .. } => *state = Some(Box::new(st)),
                        _ => return self.err("BUILD on a value that is not an object"),
                    }
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'p' => {
                    let s = self.line()?;
                    let Ok(k) = s.parse() else { return self.err(format!("bad memo key {s:?}")) };
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.push(v)
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.push(v)
                }
                b'g' => {
                    let s = self.line()?;
                    let Ok(k) = s.parse() else { return self.err(format!("bad memo key {s:?}")) };
                    let v = self.memo_get(k)?;
                    self.push(v)
                }
                _ => return self.err(format!("unsupported pickle opcode 0x{op:02x}")),
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if items.len() % 2 != 0 {
            return self.err("odd number of items for a dict");
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps({'a': [1, -2, 300, 70000], 'b': (b'xy', 'z', None, True, 1.5)}, protocol=2)`
    /// from CPython 3.11, byte for byte.
    #[test]
    fn decodes_a_cpython_protocol_2_pickle() {
        let bytes: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00eX\x01\x00\x00\x00bq\x03(c_codecs\nencode\nq\x04X\x02\x00\x00\x00xyq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08X\x01\x00\x00\x00zq\tN\x88G?\xf8\x00\x00\x00\x00\x00\x00tq\nu.";
        let v = loads(bytes).unwrap();
        assert_eq!(v.get("a").unwrap().to_ints().unwrap(), vec![1, -2, 300, 70000]);
        let Value::Tuple(b) = v.get("b").unwrap() else { panic!() };
        assert_eq!(b[0], Value::Bytes(Arc::from(&b"xy"[..])));
        assert_eq!(b[1], Value::Str("z".into()));
        assert_eq!(b[2], Value::None);
        assert_eq!(b[3], Value::Bool(true));
        assert_eq!(b[4], Value::Float(1.5));
    }

    #[test]
    fn truncation_and_bad_opcodes_name_the_offset() {
        let e = loads(b"\x80\x02]q\x00(K\x01K").unwrap_err();
        assert!(e.msg.contains("truncated"), "{e}");
        let e = loads(b"\x80\x02\xff").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.msg.contains("0xff"), "{e}");
    }

    #[test]
    fn long1_is_twos_complement() {
        // LONG1 of -129 (2 bytes: 0x7f 0xff) and of 2**40.
        let v = loads(b"\x80\x02\x8a\x02\x7f\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x86.").unwrap();
        assert_eq!(v, Value::Tuple(vec![Value::Int(-129), Value::Int(1 << 40)]));
    }

    /// `pickle.dumps({'data': np.arange(6, dtype=np.uint8).reshape(2, 3), 'labels': [3, 1]},
    /// protocol=P)` from numpy 2.4.6 / CPython 3.11, for P = 2, 4, 5 (three numpy encodings:
    /// `_codecs.encode` data, `BINBYTES` data, protocol 5's `_frombuffer` with a `BYTEARRAY8`).
    #[test]
    fn decodes_numpy_arrays_at_protocols_2_4_5() {
        let p2: &[u8] = b"\x80\x02}q\x00(X\x04\x00\x00\x00dataq\x01cnumpy._core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04c_codecs\nencode\nq\x05X\x01\x00\x00\x00bq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\t\x87q\nRq\x0b(K\x01K\x02K\x03\x86q\x0ccnumpy\ndtype\nq\rX\x02\x00\x00\x00u1q\x0e\x89\x88\x87q\x0fRq\x10(K\x03X\x01\x00\x00\x00|q\x11NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x12b\x89h\x05X\x06\x00\x00\x00\x00\x01\x02\x03\x04\x05q\x13h\x07\x86q\x14Rq\x15tq\x16bX\x06\x00\x00\x00labelsq\x17]q\x18(K\x03K\x01eu.";
        let p4: &[u8] = b"\x80\x04\x95\xad\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x04data\x94\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02K\x03\x86\x94h\x05\x8c\x05dtype\x94\x93\x94\x8c\x02u1\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x06\x00\x01\x02\x03\x04\x05\x94t\x94b\x8c\x06labels\x94]\x94(K\x03K\x01eu.";
        let p5: &[u8] = b"\x80\x05\x95\x98\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x04data\x94\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x06\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02u1\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x02K\x03\x86\x94\x8c\x01C\x94t\x94R\x94\x8c\x06labels\x94]\x94(K\x03K\x01eu.";
        for (p, bytes) in [(2, p2), (4, p4), (5, p5)] {
            let v = loads(bytes).unwrap();
            let a = v.get("data").unwrap().ndarray().unwrap_or_else(|e| panic!("protocol {p}: {e}"));
            assert_eq!(a.shape, vec![2, 3], "protocol {p}");
            assert_eq!(a.as_u8().unwrap(), &[0, 1, 2, 3, 4, 5], "protocol {p}");
            assert_eq!(v.get("labels").unwrap().to_ints().unwrap(), vec![3, 1], "protocol {p}");
        }
    }

    /// Python 2's cPickle (the CIFAR "python" files): keys and array data are `str`
    /// (`SHORT_BINSTRING`/`BINSTRING`), the module is `numpy.core.multiarray`; this is the
    /// protocol-2 stream above with those substitutions, and an int64 array as labels.
    #[test]
    fn decodes_python2_style_numpy_pickles() {
        let mut b: Vec<u8> = b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x06\x00\x00\x00".to_vec();
        b.extend_from_slice(&[9, 8, 7, 6, 5, 4]);
        b.extend_from_slice(b"tbU\x06labelscnumpy.core.multiarray\n_reconstruct\nq\x07h\x03K\x00\x85U\x01b\x87R(K\x01K\x02\x85h\x05U\x02i8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x10\x00\x00\x00");
        b.extend_from_slice(&7i64.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b.extend_from_slice(b"tbu.");
        let v = loads(&b).unwrap();
        let a = v.get("data").unwrap().ndarray().unwrap();
        assert_eq!((a.shape.clone(), a.as_u8().unwrap().to_vec()), (vec![2, 3], vec![9, 8, 7, 6, 5, 4]));
        assert_eq!(v.get("labels").unwrap().to_ints().unwrap(), vec![7, -1]);
    }
}
