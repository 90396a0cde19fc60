// norm.cu — rmsnorm_gated [RMSNormGated] and swiglu [swiglu], forward and backward.
//
// rmsnorm_gated over groups of `gs` features of each row: norm(v) = v / sqrt(mean(v²) + eps);
// norm_before_gate: out = norm(x) ⊙ w ⊙ silu(z), else out = norm(x ⊙ silu(z)) ⊙ w.
// One block per (row, group), deterministic block sums.

__device__ __forceinline__ float dsilu_f(float v) {
    const float s = sigmoid_f(v);
    return s * (1.0f + v * (1.0f - s));
}

extern "C" __global__ void __launch_bounds__(NT) rmsnorm_gated_kernel(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ z,
    float* __restrict__ out, i64 rows, i64 d, i64 gs, float eps, int nbg) {
    __shared__ float red[32];
    const i64 ngr = d / gs;
    BlockIdx bi;
    const i64 gi = bi.next(ngr), r = bi.rest;
    const i64 base = r * d + gi * gs;
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < gs; j += NT) {
        float v = x[base + j];
        if (z && !nbg) v *= silu_f(z[base + j]);
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, red);
    const float rstd = 1.0f / sqrtf(ss / (float)gs + eps);
    for (i64 j = threadIdx.x; j < gs; j += NT) {
        float v = x[base + j];
        if (z && !nbg) v *= silu_f(z[base + j]);
        float o = v * rstd * w[gi * gs + j];
        if (z && nbg) o *= silu_f(z[base + j]);
        out[base + j] = o;
    }
}

// Backward: with a = w ⊙ dout (⊙ silu(z) if norm_before_gate) and S = Σ_group a ⊙ v,
// dv = r a − v r³ S / gs; dx = dv (⊙ silu(z) if gate inside the norm); dz via silu';
// dweight partial per row → dw_part (rows, d), summed by sum_rows.
extern "C" __global__ void __launch_bounds__(NT) rmsnorm_gated_bwd_kernel(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ z,
    const float* __restrict__ dout, float* __restrict__ dx, float* __restrict__ dz,
    float* __restrict__ dw_part, i64 rows, i64 d, i64 gs, float eps, int nbg) {
    __shared__ float red[32];
    const i64 ngr = d / gs;
    BlockIdx bi;
    const i64 gi = bi.next(ngr), r = bi.rest;
    const i64 base = r * d + gi * gs;
    float ss = 0.0f, sa = 0.0f;
    for (i64 j = threadIdx.x; j < gs; j += NT) {
        const float xv = x[base + j];
        const float gate = z ? silu_f(z[base + j]) : 1.0f;
        const float v = nbg ? xv : xv * gate;
        float a = w[gi * gs + j] * dout[base + j];
        if (nbg) a *= gate;
        ss = fmaf(v, v, ss);
        sa = fmaf(a, v, sa);
    }
    ss = block_sum(ss, red);
    sa = block_sum(sa, red);
    const float rstd = 1.0f / sqrtf(ss / (float)gs + eps);
    const float coef = rstd * rstd * rstd * sa / (float)gs;
    for (i64 j = threadIdx.x; j < gs; j += NT) {
        const float xv = x[base + j];
        const float zv = z ? z[base + j] : 0.0f;
        const float gate = z ? silu_f(zv) : 1.0f;
        const float v = nbg ? xv : xv * gate;
        const float wj = w[gi * gs + j];
        const float g = dout[base + j];
        float a = wj * g;
        if (nbg) a *= gate;
        const float dv = rstd * a - v * coef;
        if (nbg) {
            dx[base + j] = dv;
            if (z) dz[base + j] = g * (v * rstd) * wj * dsilu_f(zv);
            dw_part[base + j] = g * (v * rstd) * gate;
        } else {
            dx[base + j] = dv * gate;
            if (z) dz[base + j] = dv * xv * dsilu_f(zv);
            dw_part[base + j] = g * (v * rstd);
        }
    }
}

// out[(pc, j)] = Σ_{r in chunk pc} part[r, j] (chunks of `chunk` rows, in order); a tree of
// these calls reduces any number of rows deterministically.
extern "C" __global__ void __launch_bounds__(NT) sum_rows_chunked_kernel(
    const float* __restrict__ part, float* __restrict__ out, i64 nparts, i64 len, i64 chunk) {
    const i64 ncb = (len + NT - 1) / NT;
    BlockIdx bi;
    const i64 jb = bi.next(ncb), pc = bi.rest;
    const i64 j = jb * NT + threadIdx.x;
    if (j >= len) return;
    const i64 r0 = pc * chunk, r1 = min(nparts, r0 + chunk);
    float s = 0.0f;
    for (i64 r = r0; r < r1; ++r) s += part[r * len + j];
    out[pc * len + j] = s;
}

extern "C" __global__ void swiglu_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                         float* __restrict__ out, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = silu_f(x[i]) * y[i];
}

extern "C" __global__ void swiglu_bwd_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                             const float* __restrict__ dout, float* __restrict__ dx,
                                             float* __restrict__ dy, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float xv = x[i], g = dout[i];
        dx[i] = g * y[i] * dsilu_f(xv);
        dy[i] = g * silu_f(xv);
    }
}
