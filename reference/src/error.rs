//! The one error type of the workspace.
//!
//! Every public entry point validates its input once and returns [`SsdError`] for anything
//! malformed; no kernel panics or computes silently wrong results on bad input.

use std::fmt;

/// Everything that can go wrong at a public boundary of the SSD crates.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SsdError {
    /// A tensor's shape does not match the dimensions implied by the other inputs.
    ShapeMismatch {
        /// Upstream argument name of the tensor (`x`, `dt`, `B`, ...).
        tensor: &'static str,
        /// The shape it must have.
        expected: Vec<usize>,
        /// The shape it has.
        actual: Vec<usize>,
    },
    /// `nheads` is not a multiple of `ngroups` (or `ngroups` is 0).
    GroupsDoNotDivideHeads {
        /// Number of heads.
        nheads: usize,
        /// Number of B/C groups.
        ngroups: usize,
    },
    /// `chunk_size` is 0.
    ZeroChunkSize,
    /// A `seq_idx` entry is negative.
    SeqIdxNegative {
        /// Batch row.
        batch: usize,
        /// Position in the sequence.
        position: usize,
        /// The offending id.
        value: i64,
    },
    /// `seq_idx` decreases along a row.
    SeqIdxDecreasing {
        /// Batch row.
        batch: usize,
        /// Position of the decrease.
        position: usize,
        /// Id at `position - 1`.
        previous: i64,
        /// Id at `position`.
        value: i64,
    },
    /// An `A` entry is positive (the recurrence would grow without bound).
    PositiveA {
        /// Head index.
        head: usize,
        /// The offending value.
        value: f64,
    },
    /// A float input holds NaN or an infinity.
    NonFinite {
        /// Tensor name.
        tensor: &'static str,
        /// Multi-index of the first non-finite element.
        index: Vec<usize>,
        /// The value found there.
        value: f64,
    },
    /// `dt_limit` is not an interval `0 <= dt_min <= dt_max` (or holds NaN).
    InvalidDtLimit {
        /// Lower limit.
        min: f64,
        /// Upper limit.
        max: f64,
    },
    /// A scalar argument is out of its domain (eps ≤ 0, a group size that does not divide, ...).
    InvalidArgument {
        /// Which argument.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A `state_batch_indices` entry points past the state pool.
    StateIndexOutOfRange {
        /// Batch row.
        batch: usize,
        /// The index given.
        index: i64,
        /// Number of states in the pool.
        pool: usize,
    },
    /// Two batch rows of one decode step name the same state slot.
    DuplicateStateIndex {
        /// The first row using the slot.
        first: usize,
        /// The second row using the slot.
        second: usize,
        /// The slot.
        index: i64,
    },
    /// The CUDA driver library could not be loaded.
    NoCudaDriver(String),
    /// The driver loaded but no CUDA device is present.
    NoCudaDevice,
    /// A CUDA call failed.
    Cuda {
        /// What was being done.
        context: String,
        /// The driver's or NVRTC's message.
        message: String,
    },
    /// A `.npz` problem file could not be read or is malformed.
    Npz {
        /// The array key involved, if any.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// An I/O failure (file not found, permission, ...).
    Io(String),
}

/// A short machine-readable category of an [`SsdError`] (in the manner of ndarray's `ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Shapes or dimensions disagree.
    Shape,
    /// A value is outside its domain.
    Value,
    /// CUDA is missing or failed.
    Cuda,
    /// File format or I/O.
    Io,
}

impl SsdError {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SsdError::ShapeMismatch { .. } | SsdError::GroupsDoNotDivideHeads { .. } => {
                ErrorKind::Shape
            }
            SsdError::NoCudaDriver(_) | SsdError::NoCudaDevice | SsdError::Cuda { .. } => {
                ErrorKind::Cuda
            }
            SsdError::Npz { .. } | SsdError::Io(_) => ErrorKind::Io,
            _ => ErrorKind::Value,
        }
    }

    /// Shorthand for [`SsdError::InvalidArgument`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        SsdError::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}

fn fmt_shape(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    if s.len() == 1 {
        format!("({},)", inner[0])
    } else {
        format!("({})", inner.join(", "))
    }
}

impl fmt::Display for SsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SsdError::ShapeMismatch {
                tensor,
                expected,
                actual,
            } => write!(
                f,
                "`{tensor}` has shape {} but {} was expected",
                fmt_shape(actual),
                fmt_shape(expected)
            ),
            SsdError::GroupsDoNotDivideHeads { nheads, ngroups } => write!(
                f,
                "nheads ({nheads}) must be a positive multiple of ngroups ({ngroups})"
            ),
            SsdError::ZeroChunkSize => write!(f, "chunk_size must be at least 1"),
            SsdError::SeqIdxNegative {
                batch,
                position,
                value,
            } => write!(
                f,
                "seq_idx[{batch}, {position}] = {value} is negative; sequence ids start at 0"
            ),
            SsdError::SeqIdxDecreasing {
                batch,
                position,
                previous,
                value,
            } => write!(
                f,
                "seq_idx decreases in row {batch} at position {position} ({previous} -> {value}); \
                 ids must be non-decreasing"
            ),
            SsdError::PositiveA { head, value } => {
                write!(f, "A[{head}] = {value} is positive; A must be <= 0")
            }
            SsdError::NonFinite {
                tensor,
                index,
                value,
            } => write!(f, "`{tensor}` holds {value} at index {index:?}"),
            SsdError::InvalidDtLimit { min, max } => write!(
                f,
                "dt_limit ({min}, {max}) is not an interval with 0 <= dt_min <= dt_max"
            ),
            SsdError::InvalidArgument { name, reason } => write!(f, "invalid `{name}`: {reason}"),
            SsdError::StateIndexOutOfRange { batch, index, pool } => write!(
                f,
                "state_batch_indices[{batch}] = {index} is outside the state pool of {pool}"
            ),
            SsdError::DuplicateStateIndex {
                first,
                second,
                index,
            } => write!(
                f,
                "state_batch_indices[{first}] and [{second}] both name state {index}; \
                 an in-place update needs distinct slots"
            ),
            SsdError::NoCudaDriver(m) => write!(f, "no CUDA driver: {m}"),
            SsdError::NoCudaDevice => write!(f, "no CUDA device is present"),
            SsdError::Cuda { context, message } => write!(f, "CUDA error in {context}: {message}"),
            SsdError::Npz { key, message } => match key {
                Some(k) => write!(f, "npz key `{k}`: {message}"),
                None => write!(f, "npz: {message}"),
            },
            SsdError::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

impl std::error::Error for SsdError {}

impl From<std::io::Error> for SsdError {
    fn from(e: std::io::Error) -> Self {
        SsdError::Io(e.to_string())
    }
}
