//! The `ssd-verify` command as a subprocess: the matrix, export → check round trips, a file
//! with a perturbed or non-finite result (failing, naming the tensor and, for NaN/∞, the
//! index), and malformed files or non-finite inputs (exit status 2 with a message naming the
//! problem).

use ssd_verify::npz::{read_npz, write_npz, NpyArray, NpyOut};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ssd-verify` binary built beside this test, or, for test executables carried to another
/// machine (`gpu-bundle`), the bundled one relative to the repository root they run from.
fn bin() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ssd-verify"));
    if built.exists() {
        built
    } else {
        PathBuf::from(".gpu-bundle/bin/ssd-verify")
    }
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssd-verify-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("runs ssd-verify")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn export(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["export", "--shape", "2,45,4,4,2,8", "--chunk", "16"];
    args.extend_from_slice(extra);
    let p = path.to_str().unwrap().to_string();
    args.push(&p);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "export failed: {}", stderr(&o));
    path
}

/// The arrays of an `.npz` as arrays to write back (floats as f8, integers as i8).
fn arrays(path: &Path) -> BTreeMap<String, NpyOut> {
    read_npz(path)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                NpyArray::Float(a) => NpyOut::F64(a),
                NpyArray::Int(a) => NpyOut::I64(a),
            };
            (k, v)
        })
        .collect()
}

fn float(m: &BTreeMap<String, NpyOut>, key: &str) -> ndarray::ArrayD<f64> {
    match &m[key] {
        NpyOut::F64(a) => a.clone(),
        _ => panic!("{key} is not a float array"),
    }
}

/// Runs `check` on `path` and returns (exit status, stdout, stderr).
fn check(path: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["check", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    (o.status.code(), stdout(&o), stderr(&o))
}

/// A malformed file: status 2, and stderr names `needle`.
fn assert_clear_error(path: &Path, needles: &[&str]) {
    let (code, out, err) = check(path, &[]);
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr does not name `{n}`: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("{}: {}", path.display(), err.trim());
}

#[test]
fn matrix_covers_every_kernel_and_every_measured_row_passes() {
    let o = run(&["--json"]);
    let out = stdout(&o);
    let text = out.trim();
    assert!(text.starts_with('[') && text.ends_with(']'), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    for k in ssd_reference::Kernel::ALL {
        for backend in ["reference", "cpu"] {
            assert!(
                rows.iter().any(|r| r.contains(&format!(
                    "\"kernel\":\"{}\",\"backend\":\"{backend}\"",
                    k.name()
                ))),
                "no row for {k} on {backend}"
            );
        }
    }
    for tensor in [
        "dx",
        "ddt",
        "dA",
        "dB",
        "dC",
        "dD",
        "dz",
        "ddt_bias",
        "dinitial_states",
    ] {
        assert!(
            out.contains(&format!(
                "\"kernel\":\"mamba_chunk_scan_combined_bwd\",\"backend\":\"reference\",\"tensor\":\"{tensor}\""
            )),
            "no gradient row for {tensor}"
        );
    }
    // every row that measured an error passes; the float64 reference is complete; a row that
    // could not be measured (a kernel a backend lacks) carries a note and fails the run
    for r in &rows {
        let measured = !r.contains("\"rel_l2\":null");
        if measured || r.contains("\"backend\":\"reference\"") {
            assert!(r.contains("\"pass\":true"), "{r}");
        } else {
            assert!(
                r.contains("\"pass\":false") && !r.contains("\"note\":\"\""),
                "{r}"
            );
        }
    }
    let all_pass = rows.iter().all(|r| r.contains("\"pass\":true"));
    assert_eq!(o.status.code(), Some(if all_pass { 0 } else { 1 }));
    // the table form agrees
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(if all_pass { 0 } else { 1 }));
    assert!(stdout(&o).contains(if all_pass { "ALL PASS" } else { "FAILED" }));
}

#[test]
fn export_then_check_round_trip_passes() {
    let dir = scratch("round-trip");
    for (name, opts) in [
        ("plain.npz", "none"),
        ("all.npz", "all"),
        ("some.npz", "D_head,z,seq_idx,dfinal_states"),
    ] {
        let path = export(&dir, name, &["--options", opts, "--seed", "3"]);
        // beside the default backend (cpu)
        let (code, out, err) = check(&path, &[]);
        assert_eq!(code, Some(0), "{name}: {out}\n{err}");
        assert!(out.contains("PASS: every result"), "{out}");
        assert!(out.contains("ours: cpu (f32)"), "{out}");
        let (code, out, _) = check(&path, &["--json", "--backend", "reference"]);
        assert_eq!(code, Some(0));
        assert!(out.contains("\"backend\":\"file\",\"tensor\":\"out\""));
        assert!(out.contains("\"backend\":\"reference\",\"tensor\":\"dx\""));
        assert!(!out.contains("\"pass\":false"), "{out}");
    }
    // the forward results alone, beside the CPU backend's
    let mut m = arrays(&dir.join("all.npz"));
    for k in ssd_verify::problem_file::RESULT_KEYS.iter().skip(2) {
        m.remove(*k);
    }
    let fwd = dir.join("forward-only.npz");
    write_npz(&fwd, &m).unwrap();
    let (code, out, err) = check(&fwd, &["--backend", "cpu", "--json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("\"backend\":\"cpu\",\"tensor\":\"final_states\""));
    // every gradient was exported for the all-options problem
    let m = arrays(&dir.join("all.npz"));
    for k in ssd_verify::problem_file::RESULT_KEYS {
        assert!(m.contains_key(k), "export lacks {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn perturbed_result_fails_naming_the_tensor() {
    let dir = scratch("perturbed");
    let path = export(&dir, "p.npz", &["--options", "all"]);
    for key in ["dB", "final_states", "dA"] {
        let mut m = arrays(&path);
        let mut a = float(&m, key);
        // 1e-3 relative: far above the f32 thresholds, far below anything gross
        a.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v *= 1.0 + if i % 2 == 0 { 1e-3 } else { -1e-3 });
        m.insert(key.to_string(), NpyOut::F64(a));
        let bad = dir.join(format!("bad-{key}.npz"));
        write_npz(&bad, &m).unwrap();
        let (code, out, err) = check(&bad, &["--backend", "reference"]);
        assert_eq!(code, Some(1), "{key}: {out}\n{err}");
        let fail_line = out
            .lines()
            .find(|l| l.starts_with("FAIL: the file's"))
            .unwrap_or_else(|| panic!("no FAIL line: {out}"));
        assert!(fail_line.contains(key), "{fail_line}");
        let (code, json, _) = check(&bad, &["--json", "--backend", "reference"]);
        assert_eq!(code, Some(1));
        let failing: Vec<&str> = json
            .lines()
            .filter(|l| l.contains("\"pass\":false"))
            .collect();
        assert_eq!(failing.len(), 1, "{json}");
        assert!(
            failing[0].contains(&format!("\"backend\":\"file\",\"tensor\":\"{key}\"")),
            "{json}"
        );
        // a loose enough --rtol accepts it
        let (code, _, _) = check(&bad, &["--rtol", "1e-2", "--backend", "reference"]);
        assert_eq!(code, Some(0), "{key} with --rtol 1e-2");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn results_rounded_to_f32_pass_the_default_thresholds() {
    // f32 rounding of every result (≈ 6e-8 relative) is what an exact f32 implementation
    // cannot avoid; the default thresholds must accept it.
    let dir = scratch("f32");
    let path = export(&dir, "a.npz", &["--options", "all"]);
    let mut m = arrays(&path);
    for k in ssd_verify::problem_file::RESULT_KEYS {
        let a = float(&m, k).mapv(|v| v as f32 as f64);
        m.insert(k.to_string(), NpyOut::F64(a));
    }
    let p = dir.join("rounded.npz");
    write_npz(&p, &m).unwrap();
    let (code, out, err) = check(&p, &["--backend", "reference"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_results_fail_naming_the_tensor_and_index() {
    let dir = scratch("non-finite");
    // shape 2,45,4,4,2,8: out and dz are (b, l, h, p) = (2, 45, 4, 4)
    let p = edited(&dir, "nan.npz", |m| {
        let mut out = float(m, "out");
        out[[1, 40, 3, 2]] = f64::INFINITY;
        out[[0, 7, 1, 2]] = f64::NAN;
        m.insert("out".into(), NpyOut::F64(out));
        let mut dz = float(m, "dz");
        dz[[1, 3, 0, 1]] = f64::NEG_INFINITY;
        m.insert("dz".into(), NpyOut::F64(dz));
    });
    let out_note = "out: 2 non-finite values, first NaN at (b, l, h, p) = (0, 7, 1, 2)";
    let dz_note = "dz: 1 non-finite value, first -inf at (b, l, h, p) = (1, 3, 0, 1)";
    for backend in ["reference", "cpu"] {
        let (code, out, err) = check(&p, &["--backend", backend]);
        assert_eq!(code, Some(1), "{out}\n{err}");
        eprintln!("{out}");
        for (tensor, note) in [("out", out_note), ("dz", dz_note)] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{tensor} ")))
                .unwrap_or_else(|| panic!("no row for {tensor}: {out}"));
            assert!(line.contains("non-finite"), "{line}");
            assert!(line.contains("FAIL"), "{line}");
            assert!(line.contains(note), "{line}");
        }
        assert!(
            out.contains("FAIL: the file's out, dz hold(s) NaN or infinite values"),
            "{out}"
        );
        // nothing else fails: not the other results, not our backend
        assert!(!out.contains("exceed(s) the threshold"), "{out}");
        assert!(!out.contains("FAIL: our"), "{out}");
        let (code, json, _) = check(&p, &["--json", "--backend", backend]);
        assert_eq!(code, Some(1));
        let failing: Vec<&str> = json
            .lines()
            .filter(|l| l.contains("\"pass\":false"))
            .collect();
        assert_eq!(failing.len(), 2, "{json}");
        assert!(failing[0].contains("\"backend\":\"file\",\"tensor\":\"out\""));
        assert!(
            failing[0].contains(&format!("\"note\":\"{out_note}\"")),
            "{json}"
        );
        assert!(failing[1].contains("\"backend\":\"file\",\"tensor\":\"dz\""));
        assert!(
            failing[1].contains(&format!("\"note\":\"{dz_note}\"")),
            "{json}"
        );
    }
    // no --rtol lets a NaN pass
    let (code, out, _) = check(&p, &["--rtol", "1e300", "--backend", "reference"]);
    assert_eq!(code, Some(1), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_inputs_and_seeds_are_input_errors() {
    let dir = scratch("non-finite-inputs");
    let poison = |key: &'static str, index: [usize; 4], v: f64| {
        move |m: &mut BTreeMap<String, NpyOut>| {
            let mut a = float(m, key);
            a[index.as_slice()] = v;
            m.insert(key.into(), NpyOut::F64(a));
        }
    };
    let p = edited(&dir, "x.npz", poison("x", [0, 3, 1, 2], f64::NAN));
    assert_clear_error(&p, &["`x`", "NaN", "[0, 3, 1, 2]"]);
    let p = edited(
        &dir,
        "init.npz",
        poison("initial_states", [1, 0, 2, 5], f64::INFINITY),
    );
    assert_clear_error(&p, &["`initial_states`", "inf", "[1, 0, 2, 5]"]);
    let p = edited(
        &dir,
        "dout.npz",
        poison("dout", [1, 44, 3, 3], f64::NEG_INFINITY),
    );
    assert_clear_error(&p, &["`dout`", "-inf", "[1, 44, 3, 3]"]);
    let p = edited(
        &dir,
        "dfinal.npz",
        poison("dfinal_states", [0, 1, 2, 3], f64::NAN),
    );
    assert_clear_error(&p, &["`dfinal_states`", "NaN", "[0, 1, 2, 3]"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a file with `edit` applied to the arrays of a fresh export.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut BTreeMap<String, NpyOut>)) -> PathBuf {
    let src = export(dir, &format!("src-{name}"), &["--options", "all"]);
    let mut m = arrays(&src);
    edit(&mut m);
    let p = dir.join(name);
    write_npz(&p, &m).unwrap();
    p
}

#[test]
fn missing_key_is_a_clear_error() {
    let dir = scratch("missing");
    let p = edited(&dir, "no-x.npz", |m| {
        m.remove("x");
    });
    assert_clear_error(&p, &["`x`", "missing"]);
    let p = edited(&dir, "no-dout.npz", |m| {
        m.remove("dout");
    });
    assert_clear_error(&p, &["`dout`"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn misnamed_key_is_a_clear_error() {
    let dir = scratch("misnamed");
    let p = edited(&dir, "misnamed.npz", |m| {
        let v = m.remove("dt_bias").unwrap();
        m.insert("dtbias".into(), v);
    });
    assert_clear_error(&p, &["`dtbias`", "unknown key", "did you mean `dt_bias`"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_shape_is_a_clear_error() {
    let dir = scratch("shape");
    // an input whose sequence length disagrees with x
    let p = edited(&dir, "short-b.npz", |m| {
        let b = float(m, "B");
        let short = b.slice_axis(ndarray::Axis(1), (0..10).into()).to_owned();
        m.insert("B".into(), NpyOut::F64(short));
    });
    assert_clear_error(&p, &["`B`", "shape"]);
    // a result of the wrong shape
    let p = edited(&dir, "flat-out.npz", |m| {
        let o = float(m, "out");
        let n = o.len();
        m.insert(
            "out".into(),
            NpyOut::F64(o.into_shape_with_order(ndarray::IxDyn(&[n])).unwrap()),
        );
    });
    assert_clear_error(&p, &["`out`", "shape"]);
    // a tensor with the wrong number of dimensions
    let p = edited(&dir, "x3.npz", |m| {
        let x = float(m, "x");
        let s = x.shape().to_vec();
        m.insert(
            "x".into(),
            NpyOut::F64(
                x.into_shape_with_order(ndarray::IxDyn(&[s[0], s[1], s[2] * s[3]]))
                    .unwrap(),
            ),
        );
    });
    assert_clear_error(&p, &["`x`", "dimensions"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.npy` payload with a hand-written header and raw little-endian data.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
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
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `arrays` plus raw `.npy` entries as an `.npz`.
fn npz_with_raw(path: &Path, arrays: &BTreeMap<String, NpyOut>, raw: &[(&str, Vec<u8>)]) {
    let mut buf = std::io::Cursor::new(Vec::new());
    ssd_verify::npz::write_npz_to(&mut buf, arrays).unwrap();
    let mut zip = zip::ZipWriter::new_append(std::io::Cursor::new(buf.into_inner())).unwrap();
    for (k, bytes) in raw {
        zip.start_file(format!("{k}.npy"), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    let cur = zip.finish().unwrap();
    std::fs::write(path, cur.into_inner()).unwrap();
}

#[test]
fn wrong_dtype_is_a_clear_error() {
    let dir = scratch("dtype");
    // integers where floats belong
    let p = edited(&dir, "int-x.npz", |m| {
        let x = float(m, "x").mapv(|v| v.round() as i64);
        m.insert("x".into(), NpyOut::I64(x));
    });
    assert_clear_error(&p, &["`x`", "float"]);
    // floats where integers belong
    let p = edited(&dir, "float-seq.npz", |m| {
        let s = match &m["seq_idx"] {
            NpyOut::I32(a) => a.mapv(f64::from),
            NpyOut::I64(a) => a.mapv(|v| v as f64),
            _ => panic!(),
        };
        m.insert("seq_idx".into(), NpyOut::F64(s));
    });
    assert_clear_error(&p, &["`seq_idx`", "integers"]);
    // a dtype NumPy writes that is no number we read (complex)
    let src = export(&dir, "src-complex.npz", &[]);
    let mut m = arrays(&src);
    let a = float(&m, "A");
    m.remove("A");
    let mut data = Vec::new();
    for v in a.iter() {
        data.extend_from_slice(&v.to_le_bytes());
        data.extend_from_slice(&0f64.to_le_bytes());
    }
    let p = dir.join("complex-a.npz");
    npz_with_raw(&p, &m, &[("A", npy("<c16", a.shape(), &data))]);
    assert_clear_error(&p, &["`A`", "unsupported dtype"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn narrow_floats_are_upcast() {
    // inputs and results as f4, f2 and bf16, as NumPy / ml_dtypes write them: read, upcast,
    // and judged against the truth of the upcast inputs.
    let dir = scratch("narrow");
    let src = export(&dir, "src.npz", &["--options", "all"]);
    let mut m = arrays(&src);
    let x = float(&m, "x");
    let out = float(&m, "out");
    let a = float(&m, "A");
    m.remove("x");
    m.remove("A");
    m.remove("out");
    let f4: Vec<u8> = x.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
    let out4: Vec<u8> = out.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
    // A as bfloat16 (upper half of the f32 bits) and as f16 in a second file
    let bf: Vec<u8> = a
        .iter()
        .flat_map(|v| (((*v as f32).to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let p = dir.join("narrow.npz");
    npz_with_raw(
        &p,
        &m,
        &[
            ("x", npy("<f4", x.shape(), &f4)),
            ("A", npy("bfloat16", a.shape(), &bf)),
            ("out", npy("<f4", out.shape(), &out4)),
        ],
    );
    let (code, stdout, err) = check(&p, &["--backend", "reference", "--json"]);
    // x and A changed by their rounding, so the file's f64 gradients (computed for the unrounded
    // inputs) may fail, but the file must be read and judged: status 0 or 1, never 2.
    assert!(matches!(code, Some(0) | Some(1)), "{stdout}\n{err}");
    assert!(stdout.contains("\"backend\":\"file\",\"tensor\":\"out\""));
    // -2.5 as f16 is 0xC100
    let p2 = dir.join("f16.npz");
    let mut m2 = arrays(&src);
    let a = float(&m2, "A");
    m2.remove("A");
    let h: Vec<u8> = a.iter().flat_map(|_| 0xC100u16.to_le_bytes()).collect();
    npz_with_raw(&p2, &m2, &[("A", npy("<f2", a.shape(), &h))]);
    let (code, stdout, err) = check(&p2, &["--json"]);
    assert!(matches!(code, Some(0) | Some(1)), "{stdout}\n{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_or_corrupt_file_is_a_clear_error() {
    let dir = scratch("truncated");
    let src = export(&dir, "src.npz", &["--options", "all"]);
    let bytes = std::fs::read(&src).unwrap();
    for frac in [2, 3] {
        let p = dir.join(format!("cut-{frac}.npz"));
        std::fs::write(&p, &bytes[..bytes.len() * (frac - 1) / frac]).unwrap();
        assert_clear_error(&p, &["npz"]);
    }
    // a .npy entry whose data stops early (stored, uncompressed, inside a valid zip)
    let mut m = arrays(&src);
    let x = float(&m, "x");
    m.remove("x");
    let data: Vec<u8> = x
        .iter()
        .take(x.len() / 2)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = dir.join("short-x.npz");
    npz_with_raw(&p, &m, &[("x", npy("<f8", x.shape(), &data))]);
    assert_clear_error(&p, &["`x`", "truncated"]);
    // not a zip at all
    let p = dir.join("garbage.npz");
    std::fs::write(&p, b"this is not an npz file").unwrap();
    assert_clear_error(&p, &["npz"]);
    // no such file
    assert_clear_error(&dir.join("absent.npz"), &["absent.npz"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON rows of `bench cpu` with `args` after it (a tiny shape, one rep): exactly one
/// array, one row object per line, parsed by a small JSON reader into (op, keys).
fn bench_cpu_json(args: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut all = vec!["bench", "cpu", "--reps", "1", "--json"];
    all.extend_from_slice(args);
    let o = run(&all);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    json_rows(&out)
}

/// The rows of one JSON array of flat objects as printed by `ssd-verify --json` (one object per
/// line): (`op` or `kernel`, every key); panics unless the text is one array of such objects.
fn json_rows(text: &str) -> Vec<(String, Vec<String>)> {
    let text = text.trim();
    assert!(
        text.starts_with('[') && text.ends_with(']'),
        "not one array: {text}"
    );
    assert_eq!(text.matches('[').count(), 1, "more than one array: {text}");
    let body = text[1..text.len() - 1].trim();
    if body.is_empty() {
        return Vec::new();
    }
    body.split("},\n{")
        .map(|obj| {
            let obj = obj.trim().trim_start_matches('{').trim_end_matches('}');
            let mut keys = Vec::new();
            let mut op = String::new();
            for field in obj.split(',') {
                let (k, v) = field
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{field}: {text}"));
                assert!(k.starts_with('"') && k.ends_with('"'), "key {k}: {text}");
                let k = k.trim_matches('"').to_string();
                let v = v.trim();
                assert!(
                    v == "null"
                        || v == "true"
                        || v == "false"
                        || (v.starts_with('"') && v.ends_with('"'))
                        || v.parse::<f64>().is_ok(),
                    "value {v}: {text}"
                );
                if k == "op" {
                    op = v.trim_matches('"').to_string();
                }
                keys.push(k);
            }
            (op, keys)
        })
        .collect()
}

#[test]
fn bench_cpu_prints_one_json_array_of_every_row() {
    // the plumbing only (a tiny shape, one rep): benchmarks are programs, not timed tests
    let rows = bench_cpu_json(&["--shape", "1,64,2,8,1,8,16"]);
    let ops: Vec<&str> = rows.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["forward", "forward_backward"]);
    for (op, keys) in &rows {
        for k in [
            "shape",
            "backend",
            "op",
            "median_ms",
            "gflops",
            "ceiling_ratio",
        ] {
            assert!(keys.iter().any(|x| x == k), "{op}: no {k}: {keys:?}");
        }
    }
    // the training step carries the backward's peak extra memory (the ssd-verify binary counts
    // allocations), and what bench-cpu printed beyond the table's fixed fields is there
    let train = &rows[1].1;
    for k in ["forward_ms", "backward_ms", "extra_bytes", "adjoint_bytes"] {
        assert!(train.iter().any(|x| x == k), "no {k}: {train:?}");
    }
    for k in ["recurrent_ms", "chunked_ms", "avx512"] {
        assert!(rows[0].1.iter().any(|x| x == k), "no {k}: {:?}", rows[0].1);
    }
    // --op picks rows; the forms --flag=value and --flag value agree
    let rows = bench_cpu_json(&["--shape=1,64,2,8,1,8,16", "--op=forward_backward"]);
    let ops: Vec<&str> = rows.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["forward_backward"]);
    let rows = bench_cpu_json(&["--op", "decode,forward", "--shape", "1,64,2,8,1,8,16"]);
    let ops: Vec<&str> = rows.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["forward"]);
}

/// `--dt-limit LO,HI`: a malformed or invalid value is a usage error naming the flag; a valid
/// one is written as `dt_min`/`dt_max` (and the file checks); with the client's options it is
/// the first problem of issue 20.
#[test]
fn export_dt_limit_flag() {
    let dir = scratch("dt-limit");
    let out = dir.join("bad.npz");
    let out = out.to_str().unwrap();
    for bad in [
        "0.1,0.01",
        "0.1,0.1",
        "-0.01,0.1",
        "nan,0.1",
        "0.01,nan",
        "inf,inf",
        "0.1",
        "0.01,0.1,0.2",
        "a,b",
        "",
    ] {
        let o = run(&["export", "--dt-limit", bad, out]);
        assert_eq!(o.status.code(), Some(2), "`{bad}`: {}", stderr(&o));
        assert!(stderr(&o).contains("--dt-limit"), "`{bad}`: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "`{bad}`: {}", stderr(&o));
    }
    let o = run(&["export", out, "--dt-limit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--dt-limit needs a value"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(out).exists());
    for (value, want, options) in [
        ("0.01,0.1", (0.01, 0.1), "D_head,z"),
        ("0,inf", (0.0, f64::INFINITY), "none"),
        ("0.005, 0.3", (0.005, 0.3), "all"), // overrides the option's default limits
    ] {
        let path = export(&dir, "ok.npz", &["--options", options, "--dt-limit", value]);
        let m = arrays(&path);
        let scalar = |k: &str| {
            let a = float(&m, k);
            assert_eq!(a.ndim(), 0, "{k}");
            a[[]]
        };
        assert_eq!((scalar("dt_min"), scalar("dt_max")), want, "`{value}`");
        let (code, out, err) = check(&path, &["--backend", "reference"]);
        assert_eq!(code, Some(0), "`{value}`: {out}\n{err}");
    }
    // the client command line of the README gives the first issue-20 regression problem
    let args: Vec<String> = [
        "--shape",
        "1,2048,16,64,4,128",
        "--chunk",
        "256",
        "--options",
        "D_head,z,dt_bias,softplus,initial_states",
        "--dt-limit",
        "0.01,0.1",
        "--seed",
        "2001",
        "client.npz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<String> = std::iter::once("export".to_string()).chain(args).collect();
    let parsed = match ssd_verify::cli::parse_args(&args).unwrap().command {
        ssd_verify::cli::Command::Export(a) => a,
        other => panic!("{other:?}"),
    };
    let (spec, dfinal) = ssd_verify::cli::export::spec_of(&parsed);
    let (name, want) = &ssd_verify::gen::client_regressions()[0];
    assert_eq!(&spec, want, "{name}");
    assert!(!dfinal);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["check"][..],
        &["check", "a.npz", "--backend", "tpu"][..],
        &["check", "a.npz", "--rtol", "x"][..],
        &["check", "a.npz", "b.npz"][..],
        &["export"][..],
        &["export", "--shape", "1,2,3", "a.npz"][..],
        &["export", "--options", "bogus", "a.npz"][..],
        &["export", "--shape", "1,8,3,4,2,4", "a.npz"][..],
        &["bench"][..],
        &["bench", "tpu"][..],
        &["bench", "cpu", "S1"][..],
        &["--json=yes"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("usage"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("ssd-verify check FILE.npz"));
}

/// Every subcommand (and the matrix): an unknown flag, with or without `=value`, is a usage
/// error (exit status 2) naming it, before anything runs.
#[test]
fn unknown_flags_exit_2_naming_the_flag() {
    for (prefix, flag) in [
        (&[][..], "--bogus"),
        (&[][..], "--bogus=1"),
        (&["check", "a.npz"][..], "--bogus"),
        (&["check", "a.npz"][..], "--rtol-x=1"),
        (&["export", "a.npz"][..], "--bogus"),
        (&["export", "a.npz"][..], "--seeds=3"),
        (&["bench", "cpu"][..], "--bogus"),
        (&["bench", "cuda"][..], "--repetitions=3"),
        (&["bench", "cpu"][..], "-x"),
    ] {
        let mut args = prefix.to_vec();
        args.push(flag);
        let o = run(&args);
        let err = stderr(&o);
        let name = flag.split('=').next().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("unknown flag `{name}`")),
            "{args:?}: {err}"
        );
        assert!(err.contains("usage"), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
}

/// A bad or missing value is a usage error naming the flag, in both forms.
#[test]
fn bad_values_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str, &str); 14] = [
        (&["check", "a.npz"], "--rtol", "x"),
        (&["check", "a.npz"], "--rtol", "-1"),
        (&["check", "a.npz"], "--backend", "tpu"),
        (&["export", "a.npz"], "--shape", "1,2,3"),
        (&["export", "a.npz"], "--chunk", "0"),
        (&["export", "a.npz"], "--seed", "x"),
        (&["export", "a.npz"], "--options", "bogus"),
        (&["export", "a.npz"], "--dt-limit", "0.2,0.1"),
        (&["bench", "cpu"], "--reps", "0"),
        (&["bench", "cpu"], "--reps", "many"),
        (&["bench", "cpu"], "--shape", "1,2"),
        (&["bench", "cpu"], "--shape", "S9"),
        (&["bench", "cuda"], "--op", "backward"),
        (&["bench", "cpu"], "--reps", ""),
    ];
    for (prefix, flag, value) in cases {
        let joined = format!("{flag}={value}");
        for tail in [vec![flag, value], vec![joined.as_str()]] {
            let mut args = prefix.to_vec();
            args.extend(&tail);
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(flag), "{args:?} does not name {flag}: {err}");
            assert!(err.contains("usage"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    // a flag without its value, and a switch given one
    for args in [
        &["check", "a.npz", "--rtol"][..],
        &["bench", "cpu", "--reps"][..],
        &["export", "a.npz", "--seed"][..],
    ] {
        let o = run(args);
        let flag = args.last().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&o).contains(&format!("{flag} needs a value")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    for args in [
        &["bench", "cuda", "--breakdown=yes"][..],
        &["check", "a.npz", "--json=1"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("takes no value"), "{}", stderr(&o));
    }
    // CUDA-only flags on the CPU
    for flag in ["--breakdown", "--resources"] {
        let o = run(&["bench", "cpu", flag]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
    }
}

/// `--flag=value` and `--flag value` give the same result (`export` writes the same file,
/// `check` prints the same rows).
#[test]
fn both_value_forms_give_the_same_result() {
    let dir = scratch("value-forms");
    let a = dir.join("a.npz");
    let b = dir.join("b.npz");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = run(&[
        "export",
        "--shape",
        "1,20,2,4,1,4",
        "--chunk",
        "8",
        "--seed",
        "7",
        "--options",
        "z,D",
        "--dt-limit",
        "0.01,0.2",
        "--json",
        a_s,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o2 = run(&[
        "export",
        b_s,
        "--shape=1,20,2,4,1,4",
        "--chunk=8",
        "--seed=7",
        "--options=z,D",
        "--dt-limit=0.01,0.2",
        "--json",
    ]);
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    assert_eq!(stdout(&o).replace(a_s, "F"), stdout(&o2).replace(b_s, "F"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (c1, o1, e1) = check(&a, &["--backend", "reference", "--rtol", "1e-3", "--json"]);
    let (c2, o2, e2) = check(&a, &["--backend=reference", "--rtol=1e-3", "--json"]);
    assert_eq!(c1, Some(0), "{e1}");
    assert_eq!(c2, Some(0), "{e2}");
    assert_eq!(json_rows(&o1), json_rows(&o2));
    let strip = |t: &str| -> Vec<String> {
        // everything but the measured errors, which are the same numbers
        t.lines()
            .map(|l| l.split("\"rel_l2\"").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(strip(&o1), strip(&o2));
    assert!(o1.contains("\"threshold\":1e-3"), "{o1}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--help` of every subcommand prints its usage (exit 0), wherever it stands on the line and
/// whatever else is there; `--version` prints the crate's version.
#[test]
fn help_of_every_subcommand_and_version() {
    for (args, usage_line) in [
        (&["--help"][..], "ssd-verify check FILE.npz"),
        (&["-h"][..], "ssd-verify bench cpu|cuda"),
        (&["help"][..], "ssd-verify export"),
        (&["check", "--help"][..], "ssd-verify check FILE.npz"),
        (
            &["check", "a.npz", "--rtol", "x", "-h"][..],
            "ssd-verify check FILE.npz",
        ),
        (&["help", "check"][..], "ssd-verify check FILE.npz"),
        (&["export", "--help"][..], "ssd-verify export [--shape"),
        (
            &["export", "--bogus", "--help"][..],
            "ssd-verify export [--shape",
        ),
        (&["bench", "--help"][..], "ssd-verify bench cpu|cuda"),
        (&["bench", "cuda", "--help"][..], "--breakdown"),
        (&["help", "bench"][..], "--resources"),
    ] {
        let o = run(args);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(out.starts_with("usage:"), "{args:?}: {out}");
        assert!(out.contains(usage_line), "{args:?}: {out}");
        assert!(out.contains("exit status"), "{args:?}: {out}");
    }
    // a subcommand's help is its own
    let o = run(&["check", "--help"]);
    assert!(!stdout(&o).contains("ssd-verify bench"), "{}", stdout(&o));
    let o = run(&["bench", "--help"]);
    assert!(!stdout(&o).contains("ssd-verify export"), "{}", stdout(&o));
    let version = format!("ssd-verify {}\n", env!("CARGO_PKG_VERSION"));
    for args in [
        &["--version"][..],
        &["-V"][..],
        &["check", "--version"][..],
        &["bench", "cpu", "--version"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert_eq!(stdout(&o), version, "{args:?}");
    }
}
