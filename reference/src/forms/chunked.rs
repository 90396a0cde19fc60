//! The chunked SSD: the five forward kernels composed in upstream's order
//! (`chunk_cumsum` → `chunk_state` → `state_passing` → `bmm_chunk` → `chunk_scan`).

use crate::forward::{bmm_chunk, chunk_cumsum, chunk_scan, chunk_state, state_passing};
use crate::{validate, Inputs, Options, Outputs, SsdError};
use ndarray::{Array4, Array5};

/// Every intermediate of the chunked forward (what the backward recomputes).
#[derive(Debug, Clone)]
pub struct ChunkedForward {
    /// Δ, (b, h, c, Q)
    pub dt_bhcq: Array4<f64>,
    /// within-chunk cumsum of Δ A, (b, h, c, Q)
    pub dacs_bhcq: Array4<f64>,
    /// each chunk's own state `S_c`, (b, c, h, p, n)
    pub states_bchpn: Array5<f64>,
    /// the state entering each chunk `P_c`, (b, c, h, p, n)
    pub prev_states_bchpn: Array5<f64>,
    /// `C_l · B_s` per chunk and group, (b, c, g, Q, Q)
    pub cb_bcgqq: Array5<f64>,
    /// output, (b, l, h, p)
    pub out: Array4<f64>,
    /// output before the `z` gate (present when `z` is)
    pub y: Option<Array4<f64>>,
    /// (b, h, p, n)
    pub final_states: Array4<f64>,
}

impl ChunkedForward {
    /// Runs the chunked forward and keeps every intermediate.
    pub fn run(inputs: &Inputs<'_, f64>, options: &Options) -> Result<Self, SsdError> {
        let dims = validate(inputs, options)?;
        let (dt_bhcq, dacs_bhcq) =
            chunk_cumsum(inputs.dt.view(), inputs.a.view(), inputs.dt_bias, options)?;
        let states_bchpn = chunk_state(
            inputs.b.view(),
            inputs.x.view(),
            dt_bhcq.view(),
            dacs_bhcq.view(),
            inputs.seq_idx,
        )?;
        let (prev_states_bchpn, final_states) = state_passing(
            states_bchpn.view(),
            dacs_bhcq.view(),
            inputs.initial_states,
            inputs.seq_idx,
            dims.seqlen,
        )?;
        let cb_bcgqq = bmm_chunk(
            inputs.c.view(),
            inputs.b.view(),
            options.chunk_size,
            inputs.seq_idx,
        )?;
        let (out, y) = chunk_scan(
            cb_bcgqq.view(),
            inputs.x.view(),
            dt_bhcq.view(),
            dacs_bhcq.view(),
            inputs.c.view(),
            prev_states_bchpn.view(),
            inputs.d.clone(),
            inputs.z,
            inputs.seq_idx,
        )?;
        Ok(ChunkedForward {
            dt_bhcq,
            dacs_bhcq,
            states_bchpn,
            prev_states_bchpn,
            cb_bcgqq,
            out,
            y,
            final_states,
        })
    }
}

/// The SSD forward by the chunked algorithm.
pub fn ssd_chunked(inputs: &Inputs<'_, f64>, options: &Options) -> Result<Outputs<f64>, SsdError> {
    let f = ChunkedForward::run(inputs, options)?;
    Ok(Outputs {
        out: f.out,
        final_states: f.final_states,
    })
}

/// The combined op under upstream's name: the same as [`ssd_chunked`].
pub fn mamba_chunk_scan_combined(
    inputs: &Inputs<'_, f64>,
    options: &Options,
) -> Result<Outputs<f64>, SsdError> {
    ssd_chunked(inputs, options)
}
