//! Device buffers with an ndarray shape: [`DeviceArray`], row-major (standard layout), created
//! by [`crate::Gpu::upload`] or by the kernels, read back with [`crate::Gpu::download`].

use cudarc::driver::{CudaSlice, DeviceRepr};
use ndarray::{Dimension, Ix1, Ix2, Ix3, Ix4, Ix5, IxDyn};

/// A row-major tensor in device memory.
#[derive(Debug)]
pub struct DeviceArray<T, D> {
    pub(crate) buf: CudaSlice<T>,
    dim: D,
}

/// (n) on the device.
pub type DeviceArray1<T = f32> = DeviceArray<T, Ix1>;
/// 2-D on the device.
pub type DeviceArray2<T = f32> = DeviceArray<T, Ix2>;
/// 3-D on the device.
pub type DeviceArray3<T = f32> = DeviceArray<T, Ix3>;
/// 4-D on the device.
pub type DeviceArray4<T = f32> = DeviceArray<T, Ix4>;
/// 5-D on the device.
pub type DeviceArray5<T = f32> = DeviceArray<T, Ix5>;
/// Any rank on the device.
pub type DeviceArrayD<T = f32> = DeviceArray<T, IxDyn>;

impl<T: DeviceRepr, D: Dimension> DeviceArray<T, D> {
    pub(crate) fn from_parts(buf: CudaSlice<T>, dim: D) -> Self {
        debug_assert!(buf.len() >= dim.size());
        DeviceArray { buf, dim }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The shape as a `Dimension`.
    pub fn raw_dim(&self) -> D {
        self.dim.clone()
    }

    /// The shape as a pattern (a tuple for fixed ranks).
    pub fn dim(&self) -> D::Pattern {
        self.dim.clone().into_pattern()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dim.size()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer seen with the dynamic-rank shape.
    pub fn into_dyn(self) -> DeviceArray<T, IxDyn> {
        DeviceArray {
            buf: self.buf,
            dim: self.dim.into_dyn(),
        }
    }

    /// The same buffer with another shape of the same element count.
    pub fn into_shape<E: Dimension>(
        self,
        dim: E,
    ) -> Result<DeviceArray<T, E>, ssd_reference::SsdError> {
        if dim.size() != self.len() {
            return Err(ssd_reference::SsdError::ShapeMismatch {
                tensor: "reshape",
                expected: self.shape().to_vec(),
                actual: dim.slice().to_vec(),
            });
        }
        Ok(DeviceArray { buf: self.buf, dim })
    }
}
