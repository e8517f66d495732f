//! PyTorch zip checkpoints (`pytorch_model.bin`) made without torch: a pickle writer for state
//! dicts and the zip `torch.save` writes around it (stored entries `<archive>/data.pkl`,
//! `byteorder`, `data/<key>` per storage, `version`). The fuzz seeds and the hostile-file tests
//! are built with it.

use std::io::Write;

/// A pickle being written, in protocol 2 (what `torch.save` uses) or 4.
pub struct Pickle {
    pub bytes: Vec<u8>,
    proto4: bool,
    memo: u32,
}

/// The storage a tensor views: (storage class, key, element count).
pub type Storage<'a> = (&'a str, &'a str, u32);

impl Pickle {
    pub fn new(proto4: bool) -> Pickle {
        let mut bytes = vec![0x80, if proto4 { 4 } else { 2 }];
        if proto4 {
            // FRAME: the length of what follows, a hint readers may ignore.
            bytes.extend([0x95, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        Pickle {
            bytes,
            proto4,
            memo: 0,
        }
    }

    pub fn op(&mut self, ops: &[u8]) -> &mut Self {
        self.bytes.extend(ops);
        self
    }

    pub fn put(&mut self) -> &mut Self {
        if self.proto4 {
            self.bytes.push(0x94);
        } else if self.memo < 256 {
            self.bytes.extend([b'q', self.memo as u8]);
        } else {
            self.bytes.push(b'r');
            self.bytes.extend(self.memo.to_le_bytes());
        }
        self.memo += 1;
        self
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        if self.proto4 && s.len() < 256 {
            self.bytes.extend([0x8c, s.len() as u8]);
        } else {
            self.bytes.push(b'X');
            self.bytes.extend((s.len() as u32).to_le_bytes());
        }
        self.bytes.extend(s.as_bytes());
        self
    }

    pub fn int(&mut self, v: u32) -> &mut Self {
        match v {
            0..=0xff => self.bytes.extend([b'K', v as u8]),
            0x100..=0xffff => {
                self.bytes.push(b'M');
                self.bytes.extend((v as u16).to_le_bytes());
            }
            _ => {
                self.bytes.push(b'J');
                self.bytes.extend((v as i32).to_le_bytes());
            }
        }
        self
    }

    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        if self.proto4 {
            self.text(module).text(name).op(&[0x93])
        } else {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
    }

    fn ints(&mut self, v: &[u32]) -> &mut Self {
        self.op(b"(");
        for &d in v {
            self.int(d);
        }
        self.op(b"t")
    }

    /// `name` then `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`,
    /// wrapped in `_rebuild_parameter(..., True, ())` for a parameter: one dict item.
    pub fn tensor(
        &mut self,
        name: &str,
        storage: Storage<'_>,
        offset: u32,
        size: &[u32],
        stride: &[u32],
        parameter: bool,
    ) -> &mut Self {
        self.text(name);
        if parameter {
            self.global("torch._utils", "_rebuild_parameter").op(b"(");
        }
        self.global("torch._utils", "_rebuild_tensor_v2")
            .put()
            .op(b"((");
        self.text("storage")
            .global("torch", storage.0)
            .text(storage.1);
        self.text("cpu").int(storage.2).op(b"tQ").int(offset);
        self.ints(size).ints(stride).op(&[0x89]);
        self.global("collections", "OrderedDict").op(b")RtR");
        if parameter {
            self.op(&[0x88, b')', b't', b'R']);
        }
        self
    }

    /// `OrderedDict()` with `items` (written by `items`), then `_metadata` merged in by BUILD
    /// as torch writes it, and STOP.
    pub fn state_dict(proto4: bool, items: impl FnOnce(&mut Pickle)) -> Vec<u8> {
        let mut p = Pickle::new(proto4);
        p.global("collections", "OrderedDict").put().op(b")R").put();
        p.op(b"(");
        items(&mut p);
        p.op(b"u}").text("_metadata").op(b"}sb.");
        p.bytes
    }
}

/// The zip `torch.save` writes around `pickle` and the storages `(key, bytes)`.
pub fn checkpoint(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| {
        z.start_file(format!("archive/{name}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    };
    entry("data.pkl", pickle);
    entry("byteorder", b"little");
    for (key, bytes) in storages {
        entry(&format!("data/{key}"), bytes);
    }
    entry("version", b"3\n");
    z.finish().unwrap().into_inner()
}

/// The fuzz seed: a parameter, a tensor tied to its storage, a half slice at an offset, a
/// column-major long matrix and a double scalar.
pub fn seed(proto4: bool) -> Vec<u8> {
    let pickle = Pickle::state_dict(proto4, |p| {
        p.tensor("w", ("FloatStorage", "0", 6), 0, &[2, 3], &[3, 1], true);
        p.tensor("tied", ("FloatStorage", "0", 6), 0, &[2, 3], &[3, 1], false);
        p.tensor("half", ("HalfStorage", "1", 4), 1, &[3], &[1], false);
        p.tensor(
            "fortran",
            ("LongStorage", "2", 4),
            0,
            &[2, 2],
            &[1, 2],
            false,
        );
        p.tensor("scalar", ("DoubleStorage", "3", 1), 0, &[], &[], false);
    });
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let halves: Vec<u8> = [1.0f32, 2.0, -0.5, 0.25]
        .iter()
        .flat_map(|&x| half_bits(x))
        .collect();
    let longs: Vec<u8> = (0..4i64).flat_map(|i| (i - 2).to_le_bytes()).collect();
    let pi = std::f64::consts::PI.to_le_bytes();
    checkpoint(
        &pickle,
        &[("0", &f32s), ("1", &halves), ("2", &longs), ("3", &pi)],
    )
}

/// IEEE half-precision bits of `x` (exact for normal values with 10 mantissa bits).
fn half_bits(x: f32) -> [u8; 2] {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3ff) as u16;
    (sign | ((exp as u16) << 10) | mant).to_le_bytes()
}
