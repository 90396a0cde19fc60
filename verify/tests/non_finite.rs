//! Non-finite results: the scanner ([`ssd_verify::finite`]) finds the count and the first
//! multi-index of NaN/±∞ in f32 and f64 tensors of any dimension.

use ndarray::{Array0, Array2, Array3, Array4, ArrayD, IxDyn};
use ssd_verify::finite::{axis_names, describe, message, scan, NonFinite};

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
