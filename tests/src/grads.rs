//! Comparing an f32 backward with the float64 reference's: every gradient against
//! `GRADIENT_F32`, per-head scalars and `ddt` against their terms' magnitudes, the four A-adjoint
//! contributions against the norm of the four's magnitudes (`tolerance::GRADIENT_F32` says why).
//! Shared by the CPU backward tests (`cpu_backward`, `client_problems`).

use ndarray::{Array, Array4, ArrayD, Dimension, Ix4, IxDyn};
use proptest::prelude::*;
use ssd_reference::{process_dt_grad, silu, AAdjoint, Gradients, Options, Problem};
use ssd_verify::gen::random_array;
use ssd_verify::tolerance::{max_abs, rel_l2, rel_to_magnitude, GRADIENT_F32};

/// The f32 problem and the float64 problem holding exactly its values.
pub fn rounded(p: &Problem<f64>) -> (Problem<f64>, Problem<f32>) {
    let p32 = p.to_f32();
    (p32.map(|v| v as f64), p32)
}

/// `rel_l2(got, want) ≤ GRADIENT_F32` beyond the f32 representation error of the truth
/// (`‖got − want‖ − ‖want − f32(want)‖`, relative to `‖want‖`: a float64 truth below f32's range,
/// e.g. 1e-46, rounds to 0 and that 0 is right), the worst error so far kept in `worst`.
pub fn close<D: Dimension>(
    what: &str,
    got: &Array<f32, D>,
    want: &Array<f64, D>,
    worst: &mut f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shape", what);
    let norm = |it: &mut dyn Iterator<Item = f64>| it.map(|v| v * v).sum::<f64>().sqrt();
    let num = norm(&mut got.iter().zip(want.iter()).map(|(g, w)| *g as f64 - w));
    let rep = norm(&mut want.iter().map(|w| w - (*w as f32) as f64));
    let den = norm(&mut want.iter().copied());
    let e = if num <= rep { 0.0 } else { (num - rep) / den };
    *worst = worst.max(e);
    prop_assert!(
        e <= GRADIENT_F32,
        "{}: {:e} (rel_l2 {:e}, max_abs {:e})",
        what,
        e,
        rel_l2(got, want),
        max_abs(got, want)
    );
    Ok(())
}

/// Each entry of a per-head scalar gradient within `GRADIENT_F32` of the sum of its terms'
/// magnitudes.
pub fn close_scalars(
    what: &str,
    got: &ArrayD<f32>,
    want: &ArrayD<f64>,
    magnitude: &ArrayD<f64>,
    worst: &mut f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shape", what);
    for ((g, w), m) in got.iter().zip(want.iter()).zip(magnitude.iter()) {
        // beyond the f32 representation error of the truth, as in `close`
        let rep = (*w - (*w as f32) as f64).abs();
        let e = if (*g as f64 - w).abs() <= rep {
            0.0
        } else {
            rel_to_magnitude(*g as f64, *w, *m)
        };
        *worst = worst.max(e);
        prop_assert!(
            e <= GRADIENT_F32,
            "{}: {} vs {} (term magnitude {:e}): {:e}",
            what,
            g,
            w,
            m,
            e
        );
    }
    Ok(())
}

/// `dout` (b, l, h, p) and, for odd seeds, `dfinal_states` (b, h, p, n), drawn from `seed`,
/// already representable in f32.
pub fn seeds(p: &Problem<f64>, seed: u64) -> (Array4<f64>, Option<Array4<f64>>) {
    let d = p.dims();
    let dout = random_array(&[d.batch, d.seqlen, d.nheads, d.headdim], seed)
        .into_dimensionality::<Ix4>()
        .unwrap()
        .mapv(|v| v as f32 as f64);
    let dfinal = (seed % 2 == 1).then(|| {
        random_array(&[d.batch, d.nheads, d.headdim, d.dstate], seed ^ 0xF1)
            .into_dimensionality::<Ix4>()
            .unwrap()
            .mapv(|v| v as f32 as f64)
    });
    (dout, dfinal)
}

pub fn o32(a: &Option<Array4<f64>>) -> Option<Array4<f32>> {
    a.as_ref().map(|v| v.mapv(|x| x as f32))
}

/// `Σ_{b,l} |dy ⊙ x|` per entry of `D` ((h) or (h, p)), with `dy = dout ⊙ silu(z)`.
pub fn dd_magnitude(p: &Problem<f64>, dout: &Array4<f64>) -> Option<ArrayD<f64>> {
    let d = p.d.as_ref()?;
    let (nb, l, nh, np) = p.x.dim();
    let mut m = ArrayD::<f64>::zeros(IxDyn(d.shape()));
    for b in 0..nb {
        for t in 0..l {
            for h in 0..nh {
                for k in 0..np {
                    let gate = p.z.as_ref().map_or(1.0, |z| silu(z[[b, t, h, k]]));
                    let v = (dout[[b, t, h, k]] * gate * p.x[[b, t, h, k]]).abs();
                    if d.ndim() == 1 {
                        m[[h]] += v;
                    } else {
                        m[[h, k]] += v;
                    }
                }
            }
        }
    }
    Some(m)
}

/// The magnitudes the per-head scalars and `ddt` are judged against (see
/// `tolerance::GRADIENT_F32`): `dA_h` ← `Σ (|intra| + |next| + |prev| + |chunk|) Δ`; per entry
/// of `ddt` ← `(|A| (|intra| + |next| + |prev| + |chunk|) + |ddt_direct|) ∂Δ/∂u`, with
/// `ddt_direct = ddt / (∂Δ/∂u) − A ddA` from the float64 results; `ddt_bias_h` ← their sum.
pub fn magnitudes(
    p64: &Problem<f64>,
    opts: &Options,
    adj: &AAdjoint<f64>,
    dt_bhcq: &Array4<f64>,
    ddt: &ndarray::Array3<f64>,
) -> (ArrayD<f64>, ndarray::Array3<f64>, ArrayD<f64>) {
    let (nb, l, nh) = ddt.dim();
    let q = opts.chunk_size;
    let mut ma = ArrayD::<f64>::zeros(IxDyn(&[nh]));
    let mut mt = ndarray::Array3::<f64>::zeros((nb, l, nh));
    let mut mb = ArrayD::<f64>::zeros(IxDyn(&[nh]));
    for b in 0..nb {
        for h in 0..nh {
            let a = p64.a[h];
            let bias = p64.dt_bias.as_ref().map_or(0.0, |v| v[h]);
            for t in 0..l {
                let idx = [b, h, t / q, t % q];
                let parts = adj.intra[idx].abs()
                    + adj.next[idx].abs()
                    + adj.prev[idx].abs()
                    + adj.chunk[idx].abs();
                let dda = adj.intra[idx] + adj.next[idx] + adj.prev[idx] + adj.chunk[idx];
                ma[[h]] += parts * dt_bhcq[idx];
                let grad =
                    process_dt_grad(p64.dt[[b, t, h]], bias, opts.dt_softplus, opts.dt_limit);
                if grad != 0.0 {
                    let direct = ddt[[b, t, h]] / grad - a * dda;
                    mt[[b, t, h]] = (a.abs() * parts + direct.abs()) * grad;
                    mb[[h]] += mt[[b, t, h]];
                }
            }
        }
    }
    (ma, mt, mb)
}

/// Compares every gradient and the A adjoint of the CPU backward with the reference's.
pub fn grads_close(
    what: &str,
    p64: &Problem<f64>,
    opts: &Options,
    dout: &Array4<f64>,
    got: &(Gradients<f32>, AAdjoint<f32>),
    want: &(Gradients<f64>, AAdjoint<f64>),
    dt_bhcq: &Array4<f64>,
    worst: &mut (f64, f64),
) -> Result<(), TestCaseError> {
    let (g, ga) = got;
    let (w, wa) = want;
    let t = &mut worst.0;
    close(&format!("{what} dx"), &g.dx, &w.dx, t)?;
    close(&format!("{what} dB"), &g.db, &w.db, t)?;
    close(&format!("{what} dC"), &g.dc, &w.dc, t)?;
    prop_assert_eq!(g.dz.is_some(), w.dz.is_some());
    if let (Some(a), Some(b)) = (&g.dz, &w.dz) {
        close(&format!("{what} dz"), a, b, t)?;
    }
    prop_assert_eq!(g.dinitial_states.is_some(), w.dinitial_states.is_some());
    if let (Some(a), Some(b)) = (&g.dinitial_states, &w.dinitial_states) {
        close(&format!("{what} dinitial_states"), a, b, t)?;
    }
    // The four contributions sum to the reference ddA; each is judged against the norm of the
    // four's magnitudes (one can be negligible next to the others, e.g. 1e-107, below f32's range).
    let sum32 = &(&(&ga.intra + &ga.next) + &ga.prev) + &ga.chunk;
    let dda = &(&(&wa.intra + &wa.next) + &wa.prev) + &wa.chunk;
    close(&format!("{what} Σ A adjoint = ddA"), &sum32, &dda, t)?;
    let mag = wa.intra.mapv(f64::abs)
        + wa.next.mapv(f64::abs)
        + wa.prev.mapv(f64::abs)
        + wa.chunk.mapv(f64::abs);
    let scale = mag.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (name, a, b) in [
        ("intra", &ga.intra, &wa.intra),
        ("next", &ga.next, &wa.next),
        ("prev", &ga.prev, &wa.prev),
        ("chunk", &ga.chunk, &wa.chunk),
    ] {
        let num = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (*x as f64 - y).powi(2))
            .sum::<f64>()
            .sqrt();
        let e = if num == 0.0 { 0.0 } else { num / scale };
        *t = t.max(e);
        prop_assert!(
            e <= GRADIENT_F32,
            "{} A adjoint {}: {:e} of the four's magnitude",
            what,
            name,
            e
        );
    }
    // Per-head scalars against their terms' magnitudes.
    let s = &mut worst.1;
    let (ma, mt, mb) = magnitudes(p64, opts, wa, dt_bhcq, &w.ddt);
    let num = g
        .ddt
        .iter()
        .zip(w.ddt.iter())
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>();
    let den = mt.iter().map(|v| v * v).sum::<f64>();
    let e = if num == 0.0 { 0.0 } else { (num / den).sqrt() };
    *s = s.max(e);
    prop_assert!(
        e <= GRADIENT_F32,
        "{} ddt: {:e} of its terms' magnitude (rel_l2 {:e})",
        what,
        e,
        rel_l2(&g.ddt, &w.ddt)
    );
    close_scalars(
        &format!("{what} dA"),
        &g.da.clone().into_dyn(),
        &w.da.clone().into_dyn(),
        &ma,
        s,
    )?;
    prop_assert_eq!(g.ddt_bias.is_some(), w.ddt_bias.is_some());
    if let (Some(a), Some(b)) = (&g.ddt_bias, &w.ddt_bias) {
        close_scalars(
            &format!("{what} ddt_bias"),
            &a.clone().into_dyn(),
            &b.clone().into_dyn(),
            &mb,
            s,
        )?;
    }
    prop_assert_eq!(g.dd.is_some(), w.dd.is_some());
    if let (Some(a), Some(b)) = (&g.dd, &w.dd) {
        let m = dd_magnitude(p64, dout).unwrap();
        close_scalars(&format!("{what} dD"), a, b, &m, s)?;
    }
    Ok(())
}
