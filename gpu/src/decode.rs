//! `selective_state_update` on the device: one decode step with the state pool updated in
//! place ([`ssd_reference::selective_state_update`] is the float64 truth).

use crate::array::{DeviceArray1, DeviceArray2, DeviceArray3, DeviceArray4, DeviceArrayD};
use crate::device::{opt_arg, Arg, Gpu};
use crate::forward::{check_d_shape, i};
use ssd_reference::validate::check_dt_limit;
use ssd_reference::{validate_decode, DecodeDims, DecodeInputs, DecodeOptions, SsdError};

/// The inputs of one decode step on the device, validated on upload against the state pool's
/// shape (shapes, `state_batch_indices` in range and distinct, finite values, `A ≤ 0`).
#[derive(Debug)]
pub struct DeviceDecodeInputs {
    /// (b, h, p)
    pub x: DeviceArray3,
    /// (b, h), raw
    pub dt: DeviceArray2,
    /// (h)
    pub a: DeviceArray1,
    /// (b, g, n)
    pub b: DeviceArray3,
    /// (b, g, n)
    pub c: DeviceArray3,
    /// (h) or (h, p)
    pub d: Option<DeviceArrayD>,
    /// (b, h, p)
    pub z: Option<DeviceArray3>,
    /// (h)
    pub dt_bias: Option<DeviceArray1>,
    /// (b) slot per row, < 0 = padding
    pub state_batch_indices: Option<DeviceArray1<i32>>,
    dims: DecodeDims,
    state_shape: Vec<usize>,
}

impl DeviceDecodeInputs {
    /// Validates `inputs` for a state pool of `state_shape` (pool, h, p, n) and uploads them.
    pub fn upload(
        gpu: &Gpu,
        inputs: &DecodeInputs<'_, f32>,
        state_shape: &[usize],
        options: &DecodeOptions,
    ) -> Result<Self, SsdError> {
        let dims = validate_decode(inputs, state_shape, options)?;
        Ok(DeviceDecodeInputs {
            x: gpu.upload(&inputs.x)?,
            dt: gpu.upload(&inputs.dt)?,
            a: gpu.upload(&inputs.a)?,
            b: gpu.upload(&inputs.b)?,
            c: gpu.upload(&inputs.c)?,
            d: inputs.d.as_ref().map(|d| gpu.upload(d)).transpose()?,
            z: inputs.z.as_ref().map(|v| gpu.upload(v)).transpose()?,
            dt_bias: inputs.dt_bias.as_ref().map(|v| gpu.upload(v)).transpose()?,
            state_batch_indices: inputs
                .state_batch_indices
                .as_ref()
                .map(|v| gpu.upload(v))
                .transpose()?,
            dims,
            state_shape: state_shape.to_vec(),
        })
    }

    /// The validated sizes.
    pub fn dims(&self) -> DecodeDims {
        self.dims
    }
}

impl Gpu {
    /// `selective_state_update`: updates `state` (pool, h, p, n) in place and returns `out`
    /// (b, h, p). `state` must have the shape `inputs` was validated against.
    pub fn selective_state_update(
        &self,
        state: &mut DeviceArray4,
        inputs: &DeviceDecodeInputs,
        options: &DecodeOptions,
    ) -> Result<DeviceArray3, SsdError> {
        check_dt_limit(options.dt_limit)?;
        if state.shape() != inputs.state_shape.as_slice() {
            return Err(SsdError::ShapeMismatch {
                tensor: "state",
                expected: inputs.state_shape.clone(),
                actual: state.shape().to_vec(),
            });
        }
        let DecodeDims {
            batch: nb,
            nheads: nh,
            headdim: np,
            ngroups: ng,
            dstate: nn,
            ..
        } = inputs.dims;
        let per_channel = match &inputs.d {
            Some(d) => check_d_shape(d, nh, np)?,
            None => false,
        };
        let out = self.alloc_out(ndarray::Ix3(nb, nh, np))?;
        self.launch(
            "selective_state_update_kernel",
            (nb * nh) as u64,
            128,
            &[
                state.arg(),
                inputs.x.arg(),
                inputs.dt.arg(),
                inputs.a.arg(),
                inputs.b.arg(),
                inputs.c.arg(),
                opt_arg(inputs.d.as_ref()),
                Arg::I32(per_channel as i32),
                opt_arg(inputs.z.as_ref()),
                opt_arg(inputs.dt_bias.as_ref()),
                opt_arg(inputs.state_batch_indices.as_ref()),
                out.arg(),
                i(nb),
                i(nh),
                i(np),
                i(ng),
                i(nn),
                Arg::I32(options.dt_softplus as i32),
                Arg::F(options.dt_limit.0 as f32),
                Arg::F(options.dt_limit.1 as f32),
            ],
        )?;
        Ok(out)
    }
}
