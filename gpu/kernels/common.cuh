// common.cuh — shared device code of every ssd-gpu kernel (prepended to each .cu by the Rust side).
//
// * `i64` index arithmetic everywhere (sequences past 2^31 elements).
// * f32 arithmetic only (fmaf contractions are single-rounding f32; no TF32, no fast math).
// * Every reduction has a fixed order: warp shuffles with fixed offsets, then fixed trees in
//   shared memory. No float atomics, so results are bit-identical run to run.
// * `gemm_step`: one BK-deep step of a (16·TM × 16·TN) output tile computed by 256 threads, each
//   owning a TM × TN register micro-tile; both operands are staged through shared memory by
//   caller-supplied loaders (which fold in the decay/Δ/mask factors), with coalesced global reads
//   along whichever axis of the operand is contiguous.

typedef long long i64;

#define NT 256
#define BKK 16

__device__ __forceinline__ float silu_f(float v) { return v / (1.0f + expf(-v)); }
__device__ __forceinline__ float sigmoid_f(float v) { return 1.0f / (1.0f + expf(-v)); }

// Processed dt: u = dt + bias; softplus for u <= 20; clamp to [lo, hi].
__device__ __forceinline__ float process_dt_f(float dt, float bias, int softplus, float lo, float hi) {
    float u = dt + bias;
    if (softplus && u <= 20.0f) u = log1pf(expf(u));
    return fminf(fmaxf(u, lo), hi);
}

// d process_dt / d dt: 0 where clamped, sigmoid(u) through the softplus.
__device__ __forceinline__ float process_dt_grad_f(float dt, float bias, int softplus, float lo, float hi) {
    float u = dt + bias;
    float v, dv;
    if (softplus && u <= 20.0f) {
        v = log1pf(expf(u));
        dv = 1.0f / (1.0f + expf(-u));
    } else {
        v = u;
        dv = 1.0f;
    }
    return (v < lo || v > hi) ? 0.0f : dv;
}

__device__ __forceinline__ int seq_at(const int* seq, i64 l, i64 b, i64 t) {
    return seq ? seq[b * l + t] : 0;
}

// Id of the last token of chunk c (the id its own state S_c belongs to).
__device__ __forceinline__ int chunk_end_id(const int* seq, i64 l, i64 q, i64 b, i64 c) {
    if (!seq) return 0;
    i64 end = (c + 1) * q;
    if (end > l) end = l;
    return seq[b * l + end - 1];
}

// Id of the last token before chunk c (0 for the first chunk).
__device__ __forceinline__ int prev_end_id(const int* seq, i64 l, i64 q, i64 b, i64 c) {
    if (!seq || c == 0) return 0;
    return seq[b * l + c * q - 1];
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the 16 lanes that share a tile row (lanes tx = 0..15 of a half warp).
__device__ __forceinline__ float half_warp_sum(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 16);
    return v;
}

// Deterministic block sum (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
// `red` must hold 32 floats. Synchronises; safe to call repeatedly.
__device__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[wid] = v;
    __syncthreads();
    float t = (lane < nw) ? red[lane] : 0.0f;
    t = warp_sum(t);
    return t;
}

// Inclusive block scan (blockDim.x == NT); returns the inclusive prefix, `total` gets the block
// total. `red` must hold 32 floats. Synchronises.
__device__ float block_inclusive_scan(float v, float* red, float& total) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) red[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float w = (lane < (NT / 32)) ? red[lane] : 0.0f;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            float n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        if (lane < (NT / 32)) red[lane] = w;
    }
    __syncthreads();
    if (wid > 0) v += red[wid - 1];
    total = red[NT / 32 - 1];
    return v;
}

template <int TM, int TN>
struct __align__(16) GemmSmem {
    float a[BKK][16 * TM + 4];
    float b[BKK][16 * TN + 4];
};

// One BK-deep step: acc[i][j] += Σ_kk A[m_i, k0+kk] · B[k0+kk, n_j] for the thread's rows
// m_i = (tid/16)·TM + i and columns n_j = (tid%16)·TN + j.
// la(m, kk, k) gives A[m, k] (k = k0 + kk), lb(kk, n, k) gives B[k, n]; both return 0 outside.
// A_KC / B_KC: the operand is contiguous along k in memory (else along m / n); the loader
// thread mapping follows so that a warp reads consecutive addresses.
template <int TM, int TN, bool A_KC, bool B_KC, class LA, class LB>
__device__ __forceinline__ void gemm_step(float (&acc)[TM][TN], GemmSmem<TM, TN>& sm, i64 k0,
                                          const LA& la, const LB& lb) {
    constexpr int BM = 16 * TM, BN = 16 * TN;
    const int tid = threadIdx.x;
#pragma unroll
    for (int r = 0; r < TM; ++r) {
        const int e = tid + r * NT;
        int m, k;
        if (A_KC) { k = e % BKK; m = e / BKK; } else { m = e % BM; k = e / BM; }
        sm.a[k][m] = la(m, k, k0 + k);
    }
#pragma unroll
    for (int r = 0; r < TN; ++r) {
        const int e = tid + r * NT;
        int n, k;
        if (B_KC) { k = e % BKK; n = e / BKK; } else { n = e % BN; k = e / BN; }
        sm.b[k][n] = lb(k, n, k0 + k);
    }
    __syncthreads();
    const int ty = tid >> 4, tx = tid & 15;
#pragma unroll
    for (int kk = 0; kk < BKK; ++kk) {
        float av[TM], bv[TN];
#pragma unroll
        for (int i = 0; i < TM; i += 4) {
            float4 v = *reinterpret_cast<const float4*>(&sm.a[kk][ty * TM + i]);
            av[i] = v.x; av[i + 1] = v.y; av[i + 2] = v.z; av[i + 3] = v.w;
        }
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
            float4 v = *reinterpret_cast<const float4*>(&sm.b[kk][tx * TN + j]);
            bv[j] = v.x; bv[j + 1] = v.y; bv[j + 2] = v.z; bv[j + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
}

template <int TM, int TN>
__device__ __forceinline__ void zero_acc(float (&acc)[TM][TN]) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
}

// Unflattens blockIdx.x into up to five grid coordinates (innermost first).
struct BlockIdx {
    i64 rest;
    __device__ BlockIdx() : rest((i64)blockIdx.x) {}
    __device__ i64 next(i64 extent) {
        i64 v = rest % extent;
        rest /= extent;
        return v;
    }
};

extern "C" __global__ void fill_f32_kernel(float* out, i64 n, float value) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = value;
}

// out[i] = (hash(seed, i) >> 8) · 2^-24 − 0.5, exactly reproducible on the host
// (splitmix64 finaliser of seed ^ i).
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void fill_hash_kernel(float* out, i64 n, unsigned long long seed, float scale) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        unsigned long long h = splitmix64(seed ^ (unsigned long long)i);
        float u = (float)(unsigned int)(h >> 40) * (1.0f / 16777216.0f) - 0.5f;
        out[i] = u * scale;
    }
}

// f32 FMA throughput probe (the compute ceiling of the benchmark): 8 independent chains per
// thread, `iters` rounds of 8 FMAs each; the result is written so nothing is optimised away.
extern "C" __global__ void __launch_bounds__(NT) fma_peak_kernel(float* out, i64 iters, float s) {
    float a[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) a[k] = (float)(threadIdx.x + k) * 1e-3f;
    for (i64 it = 0; it < iters; ++it) {
#pragma unroll
        for (int k = 0; k < 8; ++k) a[k] = fmaf(a[k], s, 0.5f);
    }
    float r = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) r += a[k];
    out[(i64)blockIdx.x * blockDim.x + threadIdx.x] = r;
}
