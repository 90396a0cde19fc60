//! `rmsnorm_gated` and `swiglu`, forward and backward, on the device
//! ([`ssd_reference::rmsnorm_gated`], [`ssd_reference::swiglu`] are the float64 truth).
//!
//! Backward of `rmsnorm_gated` (per group of `gs` features, `r = 1/sqrt(mean(v²) + eps)`):
//! gate inside the norm (`v = x ⊙ silu(z)`, `out = v r w`): `a = w ⊙ dout`,
//! `dv = r a − v r³ Σ(a ⊙ v)/gs`, `dx = dv ⊙ silu(z)`, `dz = dv ⊙ x ⊙ silu'(z)`,
//! `dw = Σ_rows dout ⊙ v r`; gate after the norm (`out = x r w ⊙ silu(z)`):
//! `a = w ⊙ silu(z) ⊙ dout`, `dx = r a − x r³ Σ(a ⊙ x)/gs`, `dz = dout ⊙ x r ⊙ w ⊙ silu'(z)`,
//! `dw = Σ_rows dout ⊙ x r ⊙ silu(z)`.

use crate::array::{DeviceArray1, DeviceArray2, DeviceArrayD};
use crate::device::{opt_arg, Arg, Gpu, NT};
use crate::forward::i;
use ndarray::{Ix2, IxDyn};
use ssd_reference::validate::check_shape;
use ssd_reference::{RmsNormOptions, SsdError};

fn check_rms(
    x: &DeviceArray2,
    weight: &DeviceArray1,
    z: Option<&DeviceArray2>,
    options: &RmsNormOptions,
) -> Result<usize, SsdError> {
    let (_, nd) = x.dim();
    check_shape("weight", &[nd], weight.shape())?;
    if let Some(z) = z {
        check_shape("z", x.shape(), z.shape())?;
    }
    if !(options.eps > 0.0 && options.eps.is_finite()) {
        return Err(SsdError::invalid(
            "eps",
            format!("{} is not > 0", options.eps),
        ));
    }
    let gs = options.group_size.unwrap_or(nd);
    if gs == 0 || (nd > 0 && nd % gs != 0) {
        return Err(SsdError::invalid(
            "group_size",
            format!("{gs} does not divide the feature count {nd}"),
        ));
    }
    Ok(gs.max(1))
}

impl Gpu {
    /// `rmsnorm_gated` over the rows of `x` (rows, d).
    pub fn rmsnorm_gated(
        &self,
        x: &DeviceArray2,
        weight: &DeviceArray1,
        z: Option<&DeviceArray2>,
        options: &RmsNormOptions,
    ) -> Result<DeviceArray2, SsdError> {
        let gs = check_rms(x, weight, z, options)?;
        let (rows, nd) = x.dim();
        let out = self.alloc_out(Ix2(rows, nd))?;
        self.launch(
            "rmsnorm_gated_kernel",
            (rows * (nd / gs)) as u64,
            NT,
            &[
                x.arg(),
                weight.arg(),
                opt_arg(z),
                out.arg(),
                i(rows),
                i(nd),
                i(gs),
                Arg::F(options.eps as f32),
                Arg::I32(options.norm_before_gate as i32),
            ],
        )?;
        Ok(out)
    }

    /// `rmsnorm_gated_bwd`: `(dx, dweight, dz?)`.
    pub fn rmsnorm_gated_bwd(
        &self,
        x: &DeviceArray2,
        weight: &DeviceArray1,
        z: Option<&DeviceArray2>,
        dout: &DeviceArray2,
        options: &RmsNormOptions,
    ) -> Result<(DeviceArray2, DeviceArray1, Option<DeviceArray2>), SsdError> {
        let gs = check_rms(x, weight, z, options)?;
        check_shape("dout", x.shape(), dout.shape())?;
        let (rows, nd) = x.dim();
        let dx = self.alloc_out(Ix2(rows, nd))?;
        let dz = match z {
            Some(_) => Some(self.alloc_out(Ix2(rows, nd))?),
            None => None,
        };
        let part = self.alloc_out(Ix2(rows.max(1), nd))?;
        if rows == 0 {
            self.fill(&part, 0.0)?;
        }
        self.launch(
            "rmsnorm_gated_bwd_kernel",
            (rows * (nd / gs)) as u64,
            NT,
            &[
                x.arg(),
                weight.arg(),
                opt_arg(z),
                dout.arg(),
                dx.arg(),
                opt_arg(dz.as_ref()),
                part.arg(),
                i(rows),
                i(nd),
                i(gs),
                Arg::F(options.eps as f32),
                Arg::I32(options.norm_before_gate as i32),
            ],
        )?;
        let dw = self.sum_rows(part, 1)?;
        Ok((dx, dw, dz))
    }

    /// `swiglu`: `silu(x) ⊙ y`.
    pub fn swiglu(&self, x: &DeviceArrayD, y: &DeviceArrayD) -> Result<DeviceArrayD, SsdError> {
        check_shape("y", x.shape(), y.shape())?;
        let out = self.alloc_out(IxDyn(x.shape()))?;
        let n = x.len();
        self.launch(
            "swiglu_kernel",
            (n as u64).div_ceil(NT as u64).min(65536),
            NT,
            &[x.arg(), y.arg(), out.arg(), i(n)],
        )?;
        Ok(out)
    }

    /// `swiglu_bwd`: `(dx, dy)` = `(dout ⊙ y ⊙ silu'(x), dout ⊙ silu(x))`.
    pub fn swiglu_bwd(
        &self,
        x: &DeviceArrayD,
        y: &DeviceArrayD,
        dout: &DeviceArrayD,
    ) -> Result<(DeviceArrayD, DeviceArrayD), SsdError> {
        check_shape("y", x.shape(), y.shape())?;
        check_shape("dout", x.shape(), dout.shape())?;
        let dx = self.alloc_out(IxDyn(x.shape()))?;
        let dy = self.alloc_out(IxDyn(x.shape()))?;
        let n = x.len();
        self.launch(
            "swiglu_bwd_kernel",
            (n as u64).div_ceil(NT as u64).min(65536),
            NT,
            &[x.arg(), y.arg(), dout.arg(), dx.arg(), dy.arg(), i(n)],
        )?;
        Ok((dx, dy))
    }
}
