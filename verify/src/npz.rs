//! Reading and writing `.npz` files (a zip of `.npy` arrays) as NumPy writes them.
//!
//! Reads little- and big-endian `f2` (IEEE half), `f4`, `f8`, bfloat16 (as `ml_dtypes` writes it,
//! descr `bfloat16` or `<V2` with that name), signed and unsigned integers of 1–8 bytes and
//! `b1`, in C or Fortran order, and upcasts every float to f64 and every integer to i64.
//! Writes `<f8`, `<i4`, `<i8` and `|b1`, C order, deflated.

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ssd_reference::SsdError;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};

/// One array read from a `.npy`, upcast.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    /// Any float dtype, upcast to f64.
    Float(ArrayD<f64>),
    /// Any integer or bool dtype, upcast to i64.
    Int(ArrayD<i64>),
}

impl NpyArray {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::Float(a) => a.shape(),
            NpyArray::Int(a) => a.shape(),
        }
    }
}

fn err(key: &str, message: impl Into<String>) -> SsdError {
    SsdError::Npz {
        key: Some(key.to_string()),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Float,
    BFloat,
    Int,
    UInt,
    Bool,
}

/// Parses one `.npy` payload.
pub fn parse_npy(key: &str, bytes: &[u8]) -> Result<NpyArray, SsdError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err(key, "not a .npy array (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err(key, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(err(key, format!("unsupported .npy version {v}"))),
    };
    if bytes.len() < hstart + hlen {
        return Err(err(key, "truncated header"));
    }
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen])
        .map_err(|_| err(key, "header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| err(key, "header lacks 'descr'"))?;
    let descr = descr
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let fortran = dict_value(header, "fortran_order")
        .map(|v| v.trim().starts_with("True"))
        .unwrap_or(false);
    let shape_txt = dict_value(header, "shape").ok_or_else(|| err(key, "header lacks 'shape'"))?;
    let shape: Vec<usize> = shape_txt
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(key, format!("bad shape {shape_txt}")))
        })
        .collect::<Result<_, _>>()?;
    let (big, kind, width) = parse_descr(&descr).ok_or_else(|| {
        err(
            key,
            format!("unsupported dtype '{descr}' (floats, integers and bools are read)"),
        )
    })?;
    let count: usize = shape.iter().product();
    let data = &bytes[hstart + hlen..];
    if data.len() < count * width {
        return Err(err(
            key,
            format!(
                "truncated data: {} bytes for {count} elements of {width} bytes",
                data.len()
            ),
        ));
    }
    let word = |i: usize| -> u64 {
        let mut v = 0u64;
        let chunk = &data[i * width..(i + 1) * width];
        for k in 0..width {
            let byte = if big { chunk[k] } else { chunk[width - 1 - k] };
            v = (v << 8) | byte as u64;
        }
        v
    };
    let sh = if fortran {
        IxDyn(&shape).f()
    } else {
        IxDyn(&shape).into_shape_with_order()
    };
    let make_f = |vals: Vec<f64>| {
        ArrayD::from_shape_vec(sh.clone(), vals).map_err(|e| err(key, e.to_string()))
    };
    let make_i = |vals: Vec<i64>| {
        ArrayD::from_shape_vec(sh.clone(), vals).map_err(|e| err(key, e.to_string()))
    };
    Ok(match kind {
        Kind::Float => NpyArray::Float(make_f(
            (0..count)
                .map(|i| match width {
                    2 => f16_to_f64(word(i) as u16),
                    4 => f32::from_bits(word(i) as u32) as f64,
                    _ => f64::from_bits(word(i)),
                })
                .collect(),
        )?),
        Kind::BFloat => NpyArray::Float(make_f(
            (0..count)
                .map(|i| f32::from_bits((word(i) as u32) << 16) as f64)
                .collect(),
        )?),
        Kind::Int => NpyArray::Int(make_i(
            (0..count)
                .map(|i| {
                    let shift = 64 - 8 * width as u32;
                    ((word(i) << shift) as i64) >> shift
                })
                .collect(),
        )?),
        Kind::UInt | Kind::Bool => {
            NpyArray::Int(make_i((0..count).map(|i| word(i) as i64).collect())?)
        }
    })
}

fn parse_descr(d: &str) -> Option<(bool, Kind, usize)> {
    if d == "bfloat16" || d == "<V2" || d == "|V2" {
        return Some((false, Kind::BFloat, 2));
    }
    let (order, rest) = d.split_at(1);
    let big = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return None,
    };
    let (code, w) = rest.split_at(1);
    let width: usize = w.parse().ok()?;
    let kind = match code {
        "f" if matches!(width, 2 | 4 | 8) => Kind::Float,
        "i" if matches!(width, 1 | 2 | 4 | 8) => Kind::Int,
        "u" if matches!(width, 1 | 2 | 4 | 8) => Kind::UInt,
        "b" if width == 1 => Kind::Bool,
        _ => return None,
    };
    Some((big, kind, width))
}

/// IEEE half to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pat1 = format!("'{key}'");
    let pos = header.find(&pat1)?;
    let rest = &header[pos + pat1.len()..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// Reads every array of an `.npz` (keys without the `.npy` suffix).
pub fn read_npz_from<R: Read + Seek>(reader: R) -> Result<BTreeMap<String, NpyArray>, SsdError> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| SsdError::Npz {
        key: None,
        message: format!(
            "not a readable .npz file (corrupt, truncated, or not a zip archive): {e}"
        ),
    })?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| SsdError::Npz {
            key: None,
            message: format!("corrupt zip entry {i}: {e}"),
        })?;
        let name = f.name().trim_end_matches(".npy").to_string();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| err(&name, format!("corrupt or truncated entry: {e}")))?;
        let arr = parse_npy(&name, &buf)?;
        out.insert(name, arr);
    }
    Ok(out)
}

/// Reads every array of the `.npz` file at `path`.
pub fn read_npz(path: &std::path::Path) -> Result<BTreeMap<String, NpyArray>, SsdError> {
    let f =
        std::fs::File::open(path).map_err(|e| SsdError::Io(format!("{}: {e}", path.display())))?;
    read_npz_from(std::io::BufReader::new(f))
}

/// An array to write.
#[derive(Debug, Clone)]
pub enum NpyOut {
    /// Written as `<f8`.
    F64(ArrayD<f64>),
    /// Written as `<i4`.
    I32(ArrayD<i32>),
    /// Written as `<i8`.
    I64(ArrayD<i64>),
    /// Written as `|b1`.
    Bool(ArrayD<bool>),
}

fn npy_bytes(arr: &NpyOut) -> Vec<u8> {
    let (descr, shape): (&str, Vec<usize>) = match arr {
        NpyOut::F64(a) => ("<f8", a.shape().to_vec()),
        NpyOut::I32(a) => ("<i4", a.shape().to_vec()),
        NpyOut::I64(a) => ("<i8", a.shape().to_vec()),
        NpyOut::Bool(a) => ("|b1", a.shape().to_vec()),
    };
    let shape_txt = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // pad so that magic (6) + version (2) + len (2) + header is a multiple of 64, ending in \n
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::new();
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match arr {
        NpyOut::F64(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        NpyOut::I32(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        NpyOut::I64(a) => a
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        NpyOut::Bool(a) => a.iter().for_each(|v| out.push(*v as u8)),
    }
    out
}

/// Writes arrays as an `.npz` (deflated) to `writer`.
pub fn write_npz_to<W: Write + Seek>(
    writer: W,
    arrays: &BTreeMap<String, NpyOut>,
) -> Result<(), SsdError> {
    let mut zip = zip::ZipWriter::new(writer);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let io = |e: zip::result::ZipError| SsdError::Io(e.to_string());
    for (k, v) in arrays {
        zip.start_file(format!("{k}.npy"), opts).map_err(io)?;
        zip.write_all(&npy_bytes(v))?;
    }
    zip.finish().map_err(io)?;
    Ok(())
}

/// Writes arrays as an `.npz` file at `path`.
pub fn write_npz(
    path: &std::path::Path,
    arrays: &BTreeMap<String, NpyOut>,
) -> Result<(), SsdError> {
    let f = std::fs::File::create(path)
        .map_err(|e| SsdError::Io(format!("{}: {e}", path.display())))?;
    write_npz_to(std::io::BufWriter::new(f), arrays)
}
