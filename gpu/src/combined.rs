//! The combined op on the device: [`Gpu::mamba_chunk_scan_combined`] (forward) and
//! [`Gpu::mamba_chunk_scan_combined_bwd`] (backward with the four A-adjoint contributions),
//! on inputs validated and uploaded once by [`DeviceInputs::upload`]; plus host-to-host
//! conveniences.
//!
//! Forward: `chunk_cumsum → chunk_state → state_passing → bmm_chunk → chunk_scan`, with
//! `chunk_state` and `state_passing` as one kernel (`chunk_state_passing_kernel`: each chunk's
//! block passes the state on to the next chunk's, so the per-chunk states never reach memory;
//! the same f32 operations as the two kernels).
//! Backward (from the saved [`GpuChunkedForward`]): `chunk_scan_bwd_dz →
//! chunk_scan_bwd_dstates → state_passing_bwd → chunk_scan_chunk_state_bwd_dx →
//! chunk_scan_bwd_dcb with chunk_scan_bwd_ddacs_stable (one pass, one `⟨dy, x⟩` product per
//! head) → bmm_chunk_bwd → chunk_state_bwd_db → chunk_scan_bwd_dc → assembly of ddA →
//! chunk_cumsum_bwd`.

use crate::array::{
    DeviceArray1, DeviceArray2, DeviceArray3, DeviceArray4, DeviceArray5, DeviceArrayD,
};
use crate::device::{Gpu, NT};
use crate::forward::i;
use ndarray::{ArrayView4, Ix4};
use ssd_reference::validate::{check_finite, check_shape};
use ssd_reference::{validate, AAdjoint, Dims, Gradients, Inputs, Options, Outputs, SsdError};

/// The inputs of the SSD op in device memory, validated on upload (shapes, groups, options,
/// `seq_idx`, `A ≤ 0`, finite values), so the combined calls need no further checks.
#[derive(Debug)]
pub struct DeviceInputs {
    /// (b, l, h, p)
    pub x: DeviceArray4,
    /// (b, l, h), raw
    pub dt: DeviceArray3,
    /// (h)
    pub a: DeviceArray1,
    /// (b, l, g, n)
    pub b: DeviceArray4,
    /// (b, l, g, n)
    pub c: DeviceArray4,
    /// (h) or (h, p)
    pub d: Option<DeviceArrayD>,
    /// (b, l, h, p)
    pub z: Option<DeviceArray4>,
    /// (h)
    pub dt_bias: Option<DeviceArray1>,
    /// (b, h, p, n)
    pub initial_states: Option<DeviceArray4>,
    /// (b, l)
    pub seq_idx: Option<DeviceArray2<i32>>,
    dims: Dims,
}

impl DeviceInputs {
    /// Validates `inputs` with `options` ([`ssd_reference::validate()`]) and uploads them.
    pub fn upload(
        gpu: &Gpu,
        inputs: &Inputs<'_, f32>,
        options: &Options,
    ) -> Result<Self, SsdError> {
        let dims = validate(inputs, options)?;
        Ok(DeviceInputs {
            x: gpu.upload(&inputs.x)?,
            dt: gpu.upload(&inputs.dt)?,
            a: gpu.upload(&inputs.a)?,
            b: gpu.upload(&inputs.b)?,
            c: gpu.upload(&inputs.c)?,
            d: inputs.d.as_ref().map(|v| gpu.upload(v)).transpose()?,
            z: inputs.z.as_ref().map(|v| gpu.upload(v)).transpose()?,
            dt_bias: inputs.dt_bias.as_ref().map(|v| gpu.upload(v)).transpose()?,
            initial_states: inputs
                .initial_states
                .as_ref()
                .map(|v| gpu.upload(v))
                .transpose()?,
            seq_idx: inputs.seq_idx.as_ref().map(|v| gpu.upload(v)).transpose()?,
            dims,
        })
    }

    /// Builds device inputs from buffers already on the device. Checks shapes and groups only:
    /// the values (finite, `A ≤ 0`, `seq_idx` non-negative and non-decreasing) are the caller's
    /// to guarantee.
    pub fn from_device(
        x: DeviceArray4,
        dt: DeviceArray3,
        a: DeviceArray1,
        b: DeviceArray4,
        c: DeviceArray4,
        options: &Options,
    ) -> Result<Self, SsdError> {
        let (batch, seqlen, nheads, headdim) = x.dim();
        let (_, _, ngroups, dstate) = b.dim();
        if options.chunk_size == 0 {
            return Err(SsdError::ZeroChunkSize);
        }
        ssd_reference::validate::check_dt_limit(options.dt_limit)?;
        check_shape("dt", &[batch, seqlen, nheads], dt.shape())?;
        check_shape("A", &[nheads], a.shape())?;
        check_shape("B", &[batch, seqlen, ngroups, dstate], b.shape())?;
        ssd_reference::validate::check_groups(nheads, ngroups)?;
        check_shape("C", &[batch, seqlen, ngroups, dstate], c.shape())?;
        Ok(DeviceInputs {
            x,
            dt,
            a,
            b,
            c,
            d: None,
            z: None,
            dt_bias: None,
            initial_states: None,
            seq_idx: None,
            dims: Dims {
                batch,
                seqlen,
                nheads,
                headdim,
                ngroups,
                dstate,
            },
        })
    }

    /// The validated sizes.
    pub fn dims(&self) -> Dims {
        self.dims
    }
}

/// Results of the forward op on the device.
#[derive(Debug)]
pub struct DeviceOutputs {
    /// (b, l, h, p)
    pub out: DeviceArray4,
    /// (b, h, p, n)
    pub final_states: DeviceArray4,
}

impl DeviceOutputs {
    /// Copies both to the host.
    pub fn download(&self, gpu: &Gpu) -> Result<Outputs<f32>, SsdError> {
        Ok(Outputs {
            out: gpu.download(&self.out)?,
            final_states: gpu.download(&self.final_states)?,
        })
    }
}

/// Every intermediate of the forward that the backward needs (upstream's saved context).
#[derive(Debug)]
pub struct GpuChunkedForward {
    /// Δ, (b, h, c, Q)
    pub dt_bhcq: DeviceArray4,
    /// within-chunk cumsum of Δ A, (b, h, c, Q), rounded to f32
    pub dacs_bhcq: DeviceArray4,
    /// the rounding error of `dacs_bhcq` (the cumsum is formed in f64; the kernels use
    /// `dacs + dacs_lo`, so decay factors deep into a chunk keep f32 relative accuracy)
    pub dacs_lo_bhcq: DeviceArray4,
    /// the state entering each chunk `P_c`, (b, c, h, p, n)
    pub prev_states_bchpn: DeviceArray5,
    /// `C_l · B_s`, (b, c, g, Q, Q): only the lower triangle of 64 × 64 tiles (s ≤ l) is
    /// computed; the entries above are unspecified
    pub cb_bcgqq: DeviceArray5,
    /// the output before the `z` gate (when `z`)
    pub y: Option<DeviceArray4>,
    /// out and final_states
    pub outputs: DeviceOutputs,
}

/// Gradients on the device (see [`ssd_reference::Gradients`]).
#[derive(Debug)]
pub struct DeviceGradients {
    /// (b, l, h, p)
    pub dx: DeviceArray4,
    /// (b, l, h)
    pub ddt: DeviceArray3,
    /// (h)
    pub da: DeviceArray1,
    /// (b, l, g, n)
    pub db: DeviceArray4,
    /// (b, l, g, n)
    pub dc: DeviceArray4,
    /// `D`'s shape
    pub dd: Option<DeviceArrayD>,
    /// (b, l, h, p)
    pub dz: Option<DeviceArray4>,
    /// (h)
    pub ddt_bias: Option<DeviceArray1>,
    /// (b, h, p, n)
    pub dinitial_states: Option<DeviceArray4>,
}

impl DeviceGradients {
    /// Copies every gradient to the host.
    pub fn download(&self, gpu: &Gpu) -> Result<Gradients<f32>, SsdError> {
        Ok(Gradients {
            dx: gpu.download(&self.dx)?,
            ddt: gpu.download(&self.ddt)?,
            da: gpu.download(&self.da)?,
            db: gpu.download(&self.db)?,
            dc: gpu.download(&self.dc)?,
            dd: self.dd.as_ref().map(|v| gpu.download(v)).transpose()?,
            dz: self.dz.as_ref().map(|v| gpu.download(v)).transpose()?,
            ddt_bias: self
                .ddt_bias
                .as_ref()
                .map(|v| gpu.download(v))
                .transpose()?,
            dinitial_states: self
                .dinitial_states
                .as_ref()
                .map(|v| gpu.download(v))
                .transpose()?,
        })
    }
}

/// The four producers of the `Δ_k A` adjoint on the device, (b, h, c, Q) each.
#[derive(Debug)]
pub struct DeviceAAdjoint {
    /// `chunk_scan_bwd_ddacs_stable`
    pub intra: DeviceArray4,
    /// `chunk_state_bwd_db`
    pub next: DeviceArray4,
    /// `chunk_scan_bwd_dc` (reverse cumsum of V)
    pub prev: DeviceArray4,
    /// `state_passing_bwd` (ddA_chunk at every valid position)
    pub chunk: DeviceArray4,
}

impl DeviceAAdjoint {
    /// Copies the four pieces to the host.
    pub fn download(&self, gpu: &Gpu) -> Result<AAdjoint<f32>, SsdError> {
        Ok(AAdjoint {
            intra: gpu.download(&self.intra)?,
            next: gpu.download(&self.next)?,
            prev: gpu.download(&self.prev)?,
            chunk: gpu.download(&self.chunk)?,
        })
    }
}

impl Gpu {
    /// The chunked forward, keeping what the backward needs.
    pub fn chunked_forward(
        &self,
        inputs: &DeviceInputs,
        options: &Options,
    ) -> Result<GpuChunkedForward, SsdError> {
        if options.chunk_size == 0 {
            return Err(SsdError::ZeroChunkSize);
        }
        let (dt_bhcq, dacs_bhcq, lo) = self.chunk_cumsum_lo(
            &inputs.dt,
            &inputs.a,
            inputs.dt_bias.as_ref(),
            options,
            true,
        )?;
        let dacs_lo_bhcq = lo.expect("requested");
        let dlo = Some(&dacs_lo_bhcq);
        let seq = inputs.seq_idx.as_ref();
        let (prev_states_bchpn, final_states) = self.chunk_state_passing(
            &inputs.b,
            &inputs.x,
            &dt_bhcq,
            &dacs_bhcq,
            dlo,
            inputs.initial_states.as_ref(),
            seq,
        )?;
        let cb_bcgqq = self.bmm_chunk_impl(&inputs.c, &inputs.b, options.chunk_size, seq, true)?;
        let (out, y) = self.chunk_scan_lo(
            &cb_bcgqq,
            &inputs.x,
            &dt_bhcq,
            &dacs_bhcq,
            dlo,
            &inputs.c,
            &prev_states_bchpn,
            inputs.d.as_ref(),
            inputs.z.as_ref(),
            seq,
        )?;
        Ok(GpuChunkedForward {
            dt_bhcq,
            dacs_bhcq,
            dacs_lo_bhcq,
            prev_states_bchpn,
            cb_bcgqq,
            y,
            outputs: DeviceOutputs { out, final_states },
        })
    }

    /// `mamba_chunk_scan_combined`: the SSD forward (out, final_states).
    pub fn mamba_chunk_scan_combined(
        &self,
        inputs: &DeviceInputs,
        options: &Options,
    ) -> Result<DeviceOutputs, SsdError> {
        Ok(self.chunked_forward(inputs, options)?.outputs)
    }

    /// The backward from a saved forward: gradients w.r.t. every input and the four
    /// A-adjoint contributions, given `dout` (b, l, h, p) and optionally `dfinal_states`.
    pub fn chunked_backward(
        &self,
        inputs: &DeviceInputs,
        options: &Options,
        fwd: &GpuChunkedForward,
        dout: &DeviceArray4,
        dfinal_states: Option<&DeviceArray4>,
    ) -> Result<(DeviceGradients, DeviceAAdjoint), SsdError> {
        let Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: np,
            ngroups: ng,
            dstate: nn,
        } = inputs.dims;
        check_shape("dout", &[nb, l, nh, np], dout.shape())?;
        if let Some(f) = dfinal_states {
            check_shape("dfinal_states", &[nb, nh, np, nn], f.shape())?;
        }
        let q = options.chunk_size;
        if q == 0 {
            return Err(SsdError::ZeroChunkSize);
        }
        let nc = l.div_ceil(q);
        check_shape("dt", &[nb, nh, nc, q], fwd.dt_bhcq.shape())?;
        let seq = inputs.seq_idx.as_ref();
        let (dy_stored, dz, dd) = self.bwd_dz_lo(
            dout,
            &inputs.x,
            fwd.y.as_ref(),
            inputs.z.as_ref(),
            inputs.d.as_ref(),
            false,
        )?;
        // without z, dy = dout
        let dy = dy_stored.as_ref().unwrap_or(dout);
        let dlo = Some(&fwd.dacs_lo_bhcq);
        let dprev = self.chunk_scan_bwd_dstates_lo(&inputs.c, dy, &fwd.dacs_bhcq, dlo, seq)?;
        let (dstates, dinit, dda_chunk) = self.state_passing_bwd_lo(
            &fwd.prev_states_bchpn,
            &fwd.dacs_bhcq,
            dlo,
            &dprev,
            dfinal_states,
            seq,
            l,
        )?;
        drop(dprev);
        let (dx, ddt_direct) = self.bwd_dx_lo(
            &inputs.x,
            &fwd.dt_bhcq,
            &fwd.dacs_bhcq,
            dlo,
            &inputs.b,
            &fwd.cb_bcgqq,
            dy,
            &dstates,
            inputs.d.as_ref(),
            seq,
        )?;
        let (dcb, ipart) = self.dcb_ddacs_lo(
            &inputs.x,
            &fwd.dt_bhcq,
            &fwd.dacs_bhcq,
            dlo,
            dy,
            &fwd.cb_bcgqq,
        )?;
        let db = self.alloc_out(Ix4(nb, l, ng, nn))?;
        let dc = self.alloc_out(Ix4(nb, l, ng, nn))?;
        self.bmm_bwd_into(
            &dcb, &inputs.c, &inputs.b, seq, &db, &dc, false, true, nc, q,
        )?;
        drop(dcb);
        let upart = self.dbc(
            0,
            &inputs.x,
            &dstates,
            &inputs.b,
            &fwd.dt_bhcq,
            &fwd.dacs_bhcq,
            dlo,
            seq,
            &db,
            true,
        )?;
        drop(dstates);
        let vpart = self.dbc(
            1,
            dy,
            &fwd.prev_states_bchpn,
            &inputs.c,
            &fwd.dacs_bhcq,
            &fwd.dacs_bhcq,
            dlo,
            seq,
            &dc,
            true,
        )?;
        let dda = self.alloc_out(Ix4(nb, nh, nc, q))?;
        let adj = DeviceAAdjoint {
            intra: self.alloc_out(Ix4(nb, nh, nc, q))?,
            next: self.alloc_out(Ix4(nb, nh, nc, q))?,
            prev: self.alloc_out(Ix4(nb, nh, nc, q))?,
            chunk: self.alloc_out(Ix4(nb, nh, nc, q))?,
        };
        self.launch(
            "assemble_dda_kernel",
            (nb * nh * nc) as u64,
            NT,
            &[
                ipart.arg(),
                i(ipart.shape()[1]),
                upart.arg(),
                vpart.arg(),
                i(upart.shape()[1]),
                dda_chunk.arg(),
                dda.arg(),
                adj.intra.arg(),
                adj.next.arg(),
                adj.prev.arg(),
                adj.chunk.arg(),
                i(l),
                i(q),
                i(nc),
            ],
        )?;
        let (ddt, da, ddt_bias) = self.chunk_cumsum_bwd(
            &dda,
            &ddt_direct,
            &inputs.dt,
            &inputs.a,
            inputs.dt_bias.as_ref(),
            options,
        )?;
        let grads = DeviceGradients {
            dx,
            ddt,
            da,
            db,
            dc,
            dd,
            dz,
            ddt_bias,
            dinitial_states: inputs.initial_states.as_ref().map(|_| dinit),
        };
        Ok((grads, adj))
    }

    /// `mamba_chunk_scan_combined_bwd`: runs the forward (saving its intermediates) and the
    /// backward; returns the gradients and the four A-adjoint contributions.
    pub fn mamba_chunk_scan_combined_bwd(
        &self,
        inputs: &DeviceInputs,
        options: &Options,
        dout: &DeviceArray4,
        dfinal_states: Option<&DeviceArray4>,
    ) -> Result<(DeviceGradients, DeviceAAdjoint), SsdError> {
        let fwd = self.chunked_forward(inputs, options)?;
        self.chunked_backward(inputs, options, &fwd, dout, dfinal_states)
    }

    /// Host to host: validates, uploads, runs the forward, downloads.
    pub fn mamba_chunk_scan_combined_host(
        &self,
        inputs: &Inputs<'_, f32>,
        options: &Options,
    ) -> Result<Outputs<f32>, SsdError> {
        let dev = DeviceInputs::upload(self, inputs, options)?;
        self.mamba_chunk_scan_combined(&dev, options)?
            .download(self)
    }

    /// Host to host: validates (inputs, `dout`, `dfinal_states`), uploads, runs the backward,
    /// downloads the gradients and the A adjoint.
    pub fn mamba_chunk_scan_combined_bwd_host(
        &self,
        inputs: &Inputs<'_, f32>,
        options: &Options,
        dout: ArrayView4<'_, f32>,
        dfinal_states: Option<ArrayView4<'_, f32>>,
    ) -> Result<(Gradients<f32>, AAdjoint<f32>), SsdError> {
        let dims = validate(inputs, options)?;
        check_shape(
            "dout",
            &[dims.batch, dims.seqlen, dims.nheads, dims.headdim],
            dout.shape(),
        )?;
        check_finite("dout", &dout)?;
        if let Some(f) = &dfinal_states {
            check_shape(
                "dfinal_states",
                &[dims.batch, dims.nheads, dims.headdim, dims.dstate],
                f.shape(),
            )?;
            check_finite("dfinal_states", f)?;
        }
        let dev = DeviceInputs::upload(self, inputs, options)?;
        let dout = self.upload(&dout)?;
        let dfinal = dfinal_states.map(|f| self.upload(&f)).transpose()?;
        let (g, a) = self.mamba_chunk_scan_combined_bwd(&dev, options, &dout, dfinal.as_ref())?;
        Ok((g.download(self)?, a.download(self)?))
    }
}
