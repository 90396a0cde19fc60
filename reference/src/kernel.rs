//! The enumeration of every kernel of the op family: one name everywhere (reference, CPU,
//! CUDA); the verification matrix iterates over [`Kernel::ALL`].

/// One kernel of the SSD op family (upstream names without leading `_` / trailing `_fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Δ and its within-chunk cumsum.
    ChunkCumsum,
    /// Each chunk's own state.
    ChunkState,
    /// States carried across chunks.
    StatePassing,
    /// `C Bᵀ` per chunk.
    BmmChunk,
    /// The output of each token.
    ChunkScan,
    /// One decode step.
    SelectiveStateUpdate,
    /// Gated RMSNorm forward.
    RmsnormGated,
    /// `silu(x) y` forward.
    Swiglu,
    /// `dy`, `dz`, `dD` through the gate.
    ChunkScanBwdDz,
    /// Gradient of the states entering each chunk.
    ChunkScanBwdDstates,
    /// Gradient through state passing (and `ddA_chunk`).
    StatePassingBwd,
    /// `dx` (and the direct part of `ddt`).
    ChunkScanChunkStateBwdDx,
    /// `dB` through the chunk states (and `ddA_next`).
    ChunkStateBwdDb,
    /// `dC` through the entering states (and `ddA_prev`).
    ChunkScanBwdDc,
    /// Gradient of `CB`.
    ChunkScanBwdDcb,
    /// `dB`, `dC` from `dCB`.
    BmmChunkBwd,
    /// `ddA_intra`, formed stably.
    ChunkScanBwdDdacsStable,
    /// `ddt`, `dA`, `ddt_bias`.
    ChunkCumsumBwd,
    /// Gated RMSNorm backward.
    RmsnormGatedBwd,
    /// SwiGLU backward.
    SwigluBwd,
}

impl Kernel {
    /// Every kernel, forward ones first.
    pub const ALL: [Kernel; 20] = [
        Kernel::ChunkCumsum,
        Kernel::ChunkState,
        Kernel::StatePassing,
        Kernel::BmmChunk,
        Kernel::ChunkScan,
        Kernel::SelectiveStateUpdate,
        Kernel::RmsnormGated,
        Kernel::Swiglu,
        Kernel::ChunkScanBwdDz,
        Kernel::ChunkScanBwdDstates,
        Kernel::StatePassingBwd,
        Kernel::ChunkScanChunkStateBwdDx,
        Kernel::ChunkStateBwdDb,
        Kernel::ChunkScanBwdDc,
        Kernel::ChunkScanBwdDcb,
        Kernel::BmmChunkBwd,
        Kernel::ChunkScanBwdDdacsStable,
        Kernel::ChunkCumsumBwd,
        Kernel::RmsnormGatedBwd,
        Kernel::SwigluBwd,
    ];

    /// The kernel's name, the same function name in every backend.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::ChunkCumsum => "chunk_cumsum",
            Kernel::ChunkState => "chunk_state",
            Kernel::StatePassing => "state_passing",
            Kernel::BmmChunk => "bmm_chunk",
            Kernel::ChunkScan => "chunk_scan",
            Kernel::SelectiveStateUpdate => "selective_state_update",
            Kernel::RmsnormGated => "rmsnorm_gated",
            Kernel::Swiglu => "swiglu",
            Kernel::ChunkScanBwdDz => "chunk_scan_bwd_dz",
            Kernel::ChunkScanBwdDstates => "chunk_scan_bwd_dstates",
            Kernel::StatePassingBwd => "state_passing_bwd",
            Kernel::ChunkScanChunkStateBwdDx => "chunk_scan_chunk_state_bwd_dx",
            Kernel::ChunkStateBwdDb => "chunk_state_bwd_db",
            Kernel::ChunkScanBwdDc => "chunk_scan_bwd_dc",
            Kernel::ChunkScanBwdDcb => "chunk_scan_bwd_dcb",
            Kernel::BmmChunkBwd => "bmm_chunk_bwd",
            Kernel::ChunkScanBwdDdacsStable => "chunk_scan_bwd_ddacs_stable",
            Kernel::ChunkCumsumBwd => "chunk_cumsum_bwd",
            Kernel::RmsnormGatedBwd => "rmsnorm_gated_bwd",
            Kernel::SwigluBwd => "swiglu_bwd",
        }
    }

    /// Whether this is a backward (gradient) kernel.
    pub fn is_backward(self) -> bool {
        self >= Kernel::ChunkScanBwdDz
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
