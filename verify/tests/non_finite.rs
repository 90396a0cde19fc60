//! Non-finite results: the scanner ([`ssd_verify::finite`]) finds the count and the first
//! multi-index of NaN/±∞ in f32 and f64 tensors of any dimension, a row comparing such a tensor
//! fails with a note naming it (also when the truth is the non-finite one), and the matrix run
//! with a backend that poisons some outputs reports exactly those, each as a FAIL naming the
//! tensor and the index.

use ndarray::{Array0, Array2, Array3, Array4, ArrayD, IxDyn};
use ssd_reference::{Gradients, Kernel, Outputs, Problem, SsdError};
use ssd_verify::backends::{Backend, KernelInputs, Precision, Reference, Tensors};
use ssd_verify::finite::{axis_names, describe, message, scan, NonFinite};
use ssd_verify::matrix::report::{table, worst_per_tensor};
use ssd_verify::matrix::{run_matrix, unmatched_non_finite_rows, CaseSpec, Row, COMBINED};
use ssd_verify::{DKind, ProblemSpec};

#[test]
fn scanner_counts_and_locates_the_first_non_finite_f64() {
    let mut a = Array4::<f64>::zeros((1, 2000, 4, 32));
    a.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i as f64).sin());
    assert_eq!(scan(&a), None);
    a[[0, 1999, 3, 31]] = f64::NEG_INFINITY;
    a[[0, 1500, 0, 0]] = f64::INFINITY;
    a[[0, 1234, 3, 17]] = f64::NAN;
    let nf = scan(&a).expect("three non-finite values");
    assert_eq!(nf.count, 3);
    assert_eq!(nf.index, vec![0, 1234, 3, 17]);
    assert!(nf.value.is_nan());
    assert_eq!(
        message("mamba_chunk_scan_combined", "out", "out", &a).unwrap(),
        "out: 3 non-finite values, first NaN at (b, l, h, p) = (0, 1234, 3, 17)"
    );
    // the same through a dynamic-dimension view
    let d = a.view().into_dyn();
    assert_eq!(scan(&d).unwrap().index, vec![0, 1234, 3, 17]);
}

#[test]
fn scanner_counts_and_locates_the_first_non_finite_f32() {
    let mut a = Array3::<f32>::from_elem((3, 5, 2), 1.5);
    a[[2, 4, 1]] = f32::NAN;
    a[[1, 2, 1]] = f32::NAN;
    a[[1, 2, 0]] = f32::NEG_INFINITY;
    let nf = scan(&a).unwrap();
    assert_eq!(
        nf,
        NonFinite {
            count: 3,
            index: vec![1, 2, 0],
            value: f64::NEG_INFINITY
        }
    );
    assert_eq!(
        message("chunk_cumsum_bwd", "ddt_blh", "ddt_blh", &a).unwrap(),
        "ddt_blh: 3 non-finite values, first -inf at (b, l, h) = (1, 2, 0)"
    );
    // the largest finite f32 is finite
    let big = Array2::<f32>::from_elem((2, 2), f32::MAX);
    assert_eq!(scan(&big), None);
    let mut one = Array2::<f32>::zeros((4, 3));
    one[[3, 2]] = f32::INFINITY;
    assert_eq!(
        message("x", "weird", "weird", &one).unwrap(),
        "weird: 1 non-finite value, first +inf at (3, 2)"
    );
}

#[test]
fn scanner_indices_are_logical_not_memory_order() {
    // a transposed view: memory order differs from the logical row-major order
    let mut a = Array2::<f64>::zeros((3, 4));
    a[[2, 1]] = f64::NAN; // logical (1, 2) of the transpose, visited after (0, 2)
    a[[0, 3]] = f64::INFINITY; // logical (3, 0) of the transpose
    let t = a.t();
    let nf = scan(&t).unwrap();
    assert_eq!(nf.count, 2);
    assert_eq!(nf.index, vec![1, 2]);
    assert!(nf.value.is_nan());
    // a 0-d tensor has no index to give
    let z = Array0::from_elem((), f64::NAN);
    assert_eq!(
        message("k", "s", "s", &z).unwrap(),
        "s: 1 non-finite value, NaN"
    );
    let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
    assert_eq!(scan(&empty), None);
}

#[test]
fn axis_names_follow_the_documented_layouts() {
    let names = |k: &str, t: &str, n: usize| axis_names(k, t, n).map(|v| v.join(","));
    let c = "mamba_chunk_scan_combined_bwd";
    assert_eq!(names(c, "out", 4).as_deref(), Some("b,l,h,p"));
    assert_eq!(names(c, "dz", 4).as_deref(), Some("b,l,h,p"));
    assert_eq!(names(c, "final_states", 4).as_deref(), Some("b,h,p,n"));
    assert_eq!(names(c, "dinitial_states", 4).as_deref(), Some("b,h,p,n"));
    assert_eq!(names(c, "ddt", 3).as_deref(), Some("b,l,h"));
    assert_eq!(names(c, "dB", 4).as_deref(), Some("b,l,g,n"));
    assert_eq!(names(c, "dC", 4).as_deref(), Some("b,l,g,n"));
    assert_eq!(names(c, "dA", 1).as_deref(), Some("h"));
    assert_eq!(names(c, "ddt_bias", 1).as_deref(), Some("h"));
    assert_eq!(names(c, "dD", 1).as_deref(), Some("h"));
    assert_eq!(names(c, "dD", 2).as_deref(), Some("h,p"));
    assert_eq!(
        names(c, "ddA=intra+next+prev+chunk", 3).as_deref(),
        Some("b,l,h")
    );
    // per-kernel tensors by their shape suffix
    assert_eq!(
        names("state_passing", "prev_states_bchpn", 5).as_deref(),
        Some("b,c,h,p,n")
    );
    assert_eq!(
        names("bmm_chunk", "cb_bcgqq", 5).as_deref(),
        Some("b,c,g,q,q")
    );
    assert_eq!(
        names("state_passing_bwd", "dda_chunk_bhc", 3).as_deref(),
        Some("b,h,c")
    );
    assert_eq!(
        names("chunk_cumsum_bwd", "ddt_bias_h", 1).as_deref(),
        Some("h")
    );
    assert_eq!(
        names("selective_state_update", "state", 4).as_deref(),
        Some("pool,h,p,n")
    );
    assert_eq!(
        names("rmsnorm_gated_bwd", "dx", 2).as_deref(),
        Some("row,d")
    );
    // a rank that disagrees with the layout, or no known layout: plain indices
    assert_eq!(names(c, "out", 3), None);
    assert_eq!(names("chunk_state", "states_bchpn", 4), None);
    assert_eq!(names("swiglu_bwd", "dx", 4), None);
    assert_eq!(names(c, "whatever", 2), None);
    let nf = NonFinite {
        count: 1,
        index: vec![0, 1],
        value: f64::NAN,
    };
    assert_eq!(
        describe("t", Some(&["a", "b", "c"]), &nf),
        "t: 1 non-finite value, first NaN at (0, 1)"
    );
}

#[test]
fn a_row_with_a_non_finite_result_or_truth_fails_naming_it() {
    let want = Array4::<f64>::from_elem((2, 3, 2, 2), 0.5).into_dyn();
    let mut got = want.clone();
    got[[1, 2, 0, 1]] = f64::NAN;
    let r = Row::compare(COMBINED, "cuda", "out", "P2", &got, &want, None, 1e-5);
    assert!(!r.pass && r.non_finite);
    assert_eq!(r.verdict(), "FAIL");
    assert_eq!(
        r.note,
        "out: 1 non-finite value, first NaN at (b, l, h, p) = (1, 2, 0, 1)"
    );
    assert_eq!(r.error_cell(), "non-finite");
    assert_eq!(r.max_abs_cell(), "NaN/inf");
    let json = r.to_json();
    assert!(json.contains("\"pass\":false"), "{json}");
    assert!(json.contains(&format!("\"note\":\"{}\"", r.note)), "{json}");
    let t = table(std::slice::from_ref(&r));
    assert!(t.contains("non-finite") && t.contains("FAIL"), "{t}");
    assert!(t.contains(&r.note), "{t}");
    assert!(!t.contains("MISSING"), "{t}");

    // the truth itself non-finite: said so
    let r = Row::compare(COMBINED, "cpu", "out", "P2", &want, &got, None, 1e-5);
    assert!(!r.pass && r.non_finite);
    assert!(
        r.note.starts_with(
            "float64 truth of out: 1 non-finite value, first NaN at (b, l, h, p) = (1, 2, 0, 1)"
        ),
        "{}",
        r.note
    );
    assert!(r.note.contains("reference"), "{}", r.note);

    // a magnitude (Σ|terms|, from the reference) with an infinity
    let da = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, 2.0, 3.0]).unwrap();
    let mut mag = da.clone();
    mag[[2]] = f64::INFINITY;
    let r = Row::compare(
        "mamba_chunk_scan_combined_bwd",
        "cpu",
        "dA",
        "P1",
        &da,
        &da,
        Some(&mag),
        1e-4,
    );
    assert!(!r.pass && r.non_finite);
    assert!(
        r.note
            .starts_with("Σ|terms| of dA: 1 non-finite value, first +inf at (h) = (2)"),
        "{}",
        r.note
    );

    // finite tensors are measured as before
    let r = Row::compare(COMBINED, "cpu", "out", "P2", &want, &want, None, 1e-5);
    assert!(r.pass && !r.non_finite && r.note.is_empty());
    assert_eq!(r.rel_l2, 0.0);
}

#[test]
fn merging_keeps_the_non_finite_row() {
    let want = Array3::<f64>::from_elem((1, 4, 2), 1.0).into_dyn();
    let mut far = want.clone();
    far[[0, 0, 0]] = 3.0;
    let mut nan = want.clone();
    nan[[0, 3, 1]] = f64::NAN;
    let k = "mamba_chunk_scan_combined_bwd";
    let rows = vec![
        Row::compare(k, "cuda", "ddt", "P1", &want, &want, None, 1e-4),
        Row::compare(k, "cuda", "ddt", "P2", &far, &want, None, 1e-4),
        Row::compare(k, "cuda", "ddt", "P3", &nan, &want, None, 1e-4),
        Row::compare(k, "cuda", "ddt", "P4", &far, &want, None, 1e-4),
    ];
    assert!(!rows[1].pass && !rows[1].non_finite);
    let merged = worst_per_tensor(rows);
    assert_eq!(merged.len(), 1);
    assert!(merged[0].non_finite);
    assert_eq!(merged[0].case, "P3");
    assert_eq!(
        merged[0].note,
        "ddt: 1 non-finite value, first NaN at (b, l, h) = (0, 3, 1)"
    );
}

#[test]
fn unmatched_tensors_are_scanned_too() {
    let fine = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
    let mut bad = fine.clone();
    bad[[1, 0]] = f64::NAN;
    let rows = unmatched_non_finite_rows(
        "chunk_scan",
        "cuda",
        "P1",
        1e-5,
        [("out_blhp", &bad), ("extra", &fine), ("extra2", &bad)],
        &["out_blhp"],
    );
    // `out_blhp` is compared elsewhere; `extra` is finite
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tensor, "extra2");
    assert_eq!(
        rows[0].note,
        "extra2: 1 non-finite value, first NaN at (1, 0)"
    );
    assert!(!rows[0].pass && rows[0].non_finite);
}

/// The float64 reference under another name, with NaN/∞ written into a few of its outputs.
#[derive(Debug)]
struct Poisoned;

impl Backend for Poisoned {
    fn name(&self) -> &'static str {
        "poisoned"
    }

    fn precision(&self) -> Precision {
        Precision::F64
    }

    fn kernel(&self, kernel: Kernel, inputs: &KernelInputs) -> Result<Option<Tensors>, SsdError> {
        let mut t = Reference.kernel(kernel, inputs)?;
        if kernel == Kernel::ChunkScan {
            if let Some(t) = &mut t {
                for (name, a) in t.iter_mut() {
                    if *name == "out_blhp" {
                        a[[1, 17, 2, 5]] = f64::NAN;
                    }
                }
                // an output no row compares
                let mut junk = ArrayD::<f64>::zeros(IxDyn(&[2, 4, 3, 16]));
                junk[[0, 1, 0, 3]] = f64::INFINITY;
                t.push(("junk_bhcq", junk));
            }
        }
        Ok(t)
    }

    fn forward(&self, problem: &Problem<f64>) -> Result<Outputs<f64>, SsdError> {
        let mut o = Reference.forward(problem)?;
        o.out[[1, 0, 0, 0]] = f64::NEG_INFINITY;
        o.out[[0, 33, 3, 7]] = f64::NAN;
        Ok(o)
    }

    fn backward(
        &self,
        problem: &Problem<f64>,
        dout: &Array4<f64>,
        dfinal_states: Option<&Array4<f64>>,
    ) -> Result<Option<Gradients<f64>>, SsdError> {
        let mut g = Reference.backward(problem, dout, dfinal_states)?;
        if let Some(dz) = g.as_mut().and_then(|g| g.dz.as_mut()) {
            dz[[1, 2, 1, 4]] = f64::INFINITY;
        }
        Ok(g)
    }
}

#[test]
fn matrix_reports_each_poisoned_tensor_as_a_failure_naming_it() {
    let mut spec = ProblemSpec::plain(2, 40, 4, 8, 2, 8, 16).seed(11);
    spec.z = true;
    spec.d = DKind::PerHead;
    spec.dt_bias = true;
    spec.initial_states = true;
    let specs = [CaseSpec {
        label: "T1",
        spec,
        dfinal: true,
        state_pool: false,
        norm_before_gate: false,
        norm_groups: false,
    }];
    let backends: Vec<Box<dyn Backend>> = vec![Box::new(Poisoned)];
    let rows = run_matrix(&specs, &backends, &mut |_, _, _| {}).unwrap();
    let expected = [
        (
            "chunk_scan",
            "out_blhp",
            "out_blhp: 1 non-finite value, first NaN at (b, l, h, p) = (1, 17, 2, 5)",
        ),
        (
            "chunk_scan",
            "junk_bhcq",
            "junk_bhcq: 1 non-finite value, first +inf at (b, h, c, q) = (0, 1, 0, 3)",
        ),
        (
            "mamba_chunk_scan_combined",
            "out",
            "out: 2 non-finite values, first NaN at (b, l, h, p) = (0, 33, 3, 7)",
        ),
        (
            "mamba_chunk_scan_combined_bwd",
            "dz",
            "dz: 1 non-finite value, first +inf at (b, l, h, p) = (1, 2, 1, 4)",
        ),
    ];
    for (kernel, tensor, note) in expected {
        let r = rows
            .iter()
            .find(|r| r.kernel == kernel && r.backend == "poisoned" && r.tensor == tensor)
            .unwrap_or_else(|| panic!("no row for {kernel} {tensor}: {}", table(&rows)));
        assert!(!r.pass && r.non_finite, "{r:?}");
        assert_eq!(r.verdict(), "FAIL");
        assert_eq!(r.note, note);
        assert!(r.to_json().contains(note));
    }
    // every other row of the poisoned reference passes (the check has no false alarms), and
    // the poisoned ones are the only failures
    let failing: Vec<&Row> = rows.iter().filter(|r| !r.pass).collect();
    assert_eq!(failing.len(), expected.len(), "{}", table(&rows));
    assert!(rows
        .iter()
        .any(|r| r.kernel == COMBINED && r.tensor == "final_states" && r.pass));
    assert!(rows
        .iter()
        .any(|r| r.kernel == "mamba_chunk_scan_combined_bwd"
            && r.backend == "poisoned"
            && r.tensor == "dx"
            && r.pass));
    let t = table(&rows);
    eprintln!("{t}");
    for (_, _, note) in expected {
        assert!(t.contains(note), "{t}");
    }
    assert!(!t.contains("MISSING"), "{t}");
}
