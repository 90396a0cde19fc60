// common.cuh — shared device code of every ssd-gpu kernel (prepended to each .cu by the Rust side).
//
// * `i64` index arithmetic everywhere (sequences past 2^31 elements).
// * f32 arithmetic (fmaf contractions are single-rounding f32; no TF32, no fast math), except the
//   products of `mma_loop` / `mma_loop_async`: f64 tensor-core arithmetic on exactly converted
//   f32 operands.
// * Every reduction has a fixed order: warp shuffles with fixed offsets, then fixed trees in
//   shared memory. No float atomics, so results are bit-identical run to run.
// * `gemm_loop`: a (16·TM × 16·TN) output tile computed by 256 threads, each owning a TM × TN
//   register micro-tile, over a K range in BK-deep steps; both operands are staged through
//   double-buffered shared memory by caller-supplied loaders (which fold in the decay/Δ/mask
//   factors), with coalesced global reads along whichever axis of the operand is contiguous and
//   the next step's reads in flight during the current step's FMAs.
// * `mma_loop`: the same staging feeding the f64 tensor cores; `mma_loop_async` /
//   `mma_async_segments`: the fast forms' copies by cp.async through several stages, the
//   per-token factors applied to the copied pieces in shared memory (see there).

typedef long long i64;

#define NT 256
#define NT8 128  // threads of the kernels with 8 × 8 outputs per thread (64 × 128 tiles)
#define BKK 16
#define QS 256  // chunk positions whose per-token factors the product kernels keep in shared memory

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

// The within-chunk cumsum a is held as an f32 pair hi + lo (lo = the rounding error of an f64
// cumsum; null = 0): differences of nearby entries then keep f32 relative accuracy however deep
// into the chunk (|a| ≫ 1) they are taken, instead of ulp(|a|).
__device__ __forceinline__ float lo_at(const float* lo, i64 i) { return lo ? lo[i] : 0.0f; }

// exp(a − b) for a = ha + la, b = hb + lb.
__device__ __forceinline__ float exp_seg(float ha, float la, float hb, float lb) {
    return expf((ha - hb) + (la - lb));
}

// exp(a − b) as exp_seg, with the rounding of ha − hb kept (two-sum): accurate to expf's own
// error however far apart a and b are, where exp_seg's argument carries ulp(a − b) / 2.
__device__ __forceinline__ float exp_seg_exact(float ha, float la, float hb, float lb) {
    const float d = ha - hb;
    const float bv = d - ha;
    const float err = (ha - (d - bv)) + (-hb - bv);
    return expf(d) * (1.0f + (err + (la - lb)));
}

// exp(a) for a = h + l (|l| ≤ ulp(h)/2, so exp(h)(1 + l) is exact to second order).
__device__ __forceinline__ float exp_hl(float h, float l) { return expf(h) * (1.0f + l); }

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

// Sum over the 4 lanes of a quad (the lanes that hold one row of an mma tile: mma_col).
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
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

// Double-buffered operand tiles of `gemm_loop` (NTH threads: NTH/16 rows of TM, 16 columns of TN).
template <int TM, int TN, int NTH = NT>
struct __align__(16) GemmSmem {
    float a[2][BKK][NTH / 16 * TM + 4];
    float b[2][BKK][16 * TN + 4];
};

__device__ __forceinline__ float4 f4(float a, float b, float c, float d) {
    float4 v;
    v.x = a; v.y = b; v.z = c; v.w = d;
    return v;
}

// A compile-time flag passed to generic lambdas (a kernel body instantiated twice: a general
// form and a fast form for whole, aligned tiles without masks).
template <bool V>
struct BoolC {
    static constexpr bool value = V;
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// 16 bytes at p (aligned, in bounds: the caller's fast path has checked).
__device__ __forceinline__ float4 ld4_fast(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ float4 f4_zero() { return f4(0.0f, 0.0f, 0.0f, 0.0f); }

__device__ __forceinline__ float4 f4_scale(float4 v, float s) {
    return f4(v.x * s, v.y * s, v.z * s, v.w * s);
}

// Elements row[i0 .. i0 + 4) of a contiguous run whose valid length is n (0 past it): one
// 16-byte load when aligned and whole, else scalar loads.
__device__ __forceinline__ float4 ld4(const float* row, i64 i0, i64 n) {
    const float* p = row + i0;
    if (i0 + 3 < n && (reinterpret_cast<unsigned long long>(p) & 15ull) == 0)
        return *reinterpret_cast<const float4*>(p);
    return f4(i0 < n ? p[0] : 0.0f, i0 + 1 < n ? p[1] : 0.0f, i0 + 2 < n ? p[2] : 0.0f,
              i0 + 3 < n ? p[3] : 0.0f);
}

// The thread's rows and columns of a ((NTH/16)·TM × 16·TN) tile: rows m_i = ty·TM + i (contiguous:
// a warp reads only two row addresses per step, broadcast), columns n_j = 64·(j/4) + tx·4 + j%4
// (in groups of 4 strided by 64, so a half warp's 16-byte reads of one group are consecutive and
// free of bank conflicts however wide TN is). ty = tid/16, tx = tid%16.
__device__ __forceinline__ int tile_row(int tm, int i) { return (threadIdx.x >> 4) * tm + i; }
__device__ __forceinline__ int tile_col(int j) { return (j >> 2) * 64 + (threadIdx.x & 15) * 4 + (j & 3); }

// The float4 pieces of an operand's BX × BKK step (NF) and how many of them one of NTH
// threads holds (N).
template <int BX, int NTH>
struct Pieces {
    static constexpr int NF = BX * BKK / 4, N = (NF + NTH - 1) / NTH;
};

// The operand staging of `gemm_loop` and `mma_loop` for one BKK-deep step of a BM × BN tile
// from NTH threads: `stage_fetch` has the loaders give the thread's float4 pieces of A (BM × BKK)
// and B (BKK × BN) into registers (pieces past the tile, where NTH does not divide it, are not
// fetched); `stage_store` writes them k-major into the shared tiles sa[k][m], sb[k][n]
// (transposing scalar stores for an operand contiguous along k, else one 16-byte store).
template <int BM, int BN, int NTH>
struct StageShape {
    static constexpr int NA = Pieces<BM, NTH>::N, NB = Pieces<BN, NTH>::N;
};

// Piece f of an operand's BX × BKK step (float4 pieces along its contiguous axis): its first
// element's tile coordinate i (< BX) and k (< BKK). `KC`: contiguous along k (a piece is 4
// consecutive k of one i), else along i (4 consecutive i at one k).
template <int BX, bool KC>
__device__ __forceinline__ void piece_at(int f, int& i, int& k) {
    i = KC ? f / (BKK / 4) : (f % (BX / 4)) * 4;
    k = KC ? (f % (BKK / 4)) * 4 : f / (BX / 4);
}

// fn(r, i, k) for each of the thread's pieces of an operand's BX × BKK step: piece
// f = threadIdx.x + r·NTH (r < N, the thread's count), at tile coordinates (i, k) (piece_at);
// pieces past the step, where NTH does not divide it, are skipped.
template <int BX, bool KC, int NTH, class F>
__device__ __forceinline__ void each_piece(const F& fn) {
    constexpr int NF = Pieces<BX, NTH>::NF, N = Pieces<BX, NTH>::N;
#pragma unroll
    for (int r = 0; r < N; ++r) {
        const int f = threadIdx.x + r * NTH;
        if (NF % NTH != 0 && f >= NF) continue;
        int i, k;
        piece_at<BX, KC>(f, i, k);
        fn(r, i, k);
    }
}

// The thread's pieces of one operand from its loader, into registers.
template <int BX, bool KC, int NTH, int N, class L>
__device__ __forceinline__ void stage_fetch_one(float4 (&reg)[N], const L& ld, i64 k0) {
    each_piece<BX, KC, NTH>([&](int r, int i, int k) { reg[r] = ld(i, k0 + k); });
}

template <int BM, int BN, bool A_KC, bool B_KC, int NTH, int NA, int NB, class LA, class LB>
__device__ __forceinline__ void stage_fetch(float4 (&ra)[NA], float4 (&rb)[NB], const LA& la,
                                            const LB& lb, i64 k0) {
    stage_fetch_one<BM, A_KC, NTH>(ra, la, k0);
    stage_fetch_one<BN, B_KC, NTH>(rb, lb, k0);
}

// One operand's pieces into its k-major tile t[k][i] (i < BX), each through `fix` (see
// mma_loop); `KC`: contiguous along k.
template <int BX, bool KC, int NTH, int N, int W, class FX>
__device__ __forceinline__ void stage_store_one(float (&t)[BKK][W], const float4 (&reg)[N],
                                                const FX& fix, i64 k0) {
    each_piece<BX, KC, NTH>([&](int r, int i, int k) {
        const float4 v = fix(i, k0 + k, reg[r]);
        if (KC) {
            t[k][i] = v.x;
            t[k + 1][i] = v.y;
            t[k + 2][i] = v.z;
            t[k + 3][i] = v.w;
        } else {
            *reinterpret_cast<float4*>(&t[k][i]) = v;
        }
    });
}

template <int BM, int BN, bool A_KC, bool B_KC, int NTH, int NA, int NB, int WA, int WB, class FA,
          class FB>
__device__ __forceinline__ void stage_store(float (&sa)[BKK][WA], float (&sb)[BKK][WB],
                                            const float4 (&ra)[NA], const float4 (&rb)[NB],
                                            const FA& fa, const FB& fb, i64 k0) {
    stage_store_one<BM, A_KC, NTH>(sa, ra, fa, k0);
    stage_store_one<BN, B_KC, NTH>(sb, rb, fb, k0);
}

// The identity fix-up (see mma_loop).
struct NoFix {
    __device__ float4 operator()(int, i64, float4 v) const { return v; }
};

// acc[i][j] += Σ_{k in [kbeg, kend)} A[m_i, k] · B[k, n_j] for the thread's rows m_i and
// columns n_j (tile_row, tile_col). Steps entirely outside [kfloor, kcap] skip the thread's
// FMAs (causal tiles: pass the smallest / largest k the thread's rows need; the loaders must
// still give zeros past each row's own limit).
// Loaders give 4 consecutive elements along the operand's contiguous axis:
//   la(m, k): A[m, k..k+4) when A_KC (A contiguous along k), else A[m..m+4, k);
//   lb(n, k): B[k..k+4, n) when B_KC, else B[k, n..n+4);
// (m, n tile-relative, k absolute); zero outside the operand. The warp's loads are consecutive
// 16-byte pieces of memory. Pipelined: the next step's global loads are issued into registers
// before the current step's FMAs, and the shared tiles are double-buffered (one barrier per
// step). `kbeg` must be a multiple of 4.
template <int TM, int TN, bool A_KC, bool B_KC, int NTH = NT, class LA, class LB>
__device__ __forceinline__ void gemm_loop(float (&acc)[TM][TN], GemmSmem<TM, TN, NTH>& sm, i64 kbeg,
                                          i64 kend, const LA& la, const LB& lb,
                                          i64 kcap = 0x7fffffffffffffffll, i64 kfloor = 0) {
    constexpr int BM = NTH / 16 * TM, BN = 16 * TN;
    using St = StageShape<BM, BN, NTH>;
    const int tid = threadIdx.x;
    const int ty = tid >> 4, tx = tid & 15;
    float4 ra[St::NA], rb[St::NB];
    if (kbeg < kend) stage_fetch<BM, BN, A_KC, B_KC, NTH>(ra, rb, la, lb, kbeg);
    int buf = 0;
    for (i64 k0 = kbeg; k0 < kend; k0 += BKK) {
        stage_store<BM, BN, A_KC, B_KC, NTH>(sm.a[buf], sm.b[buf], ra, rb, NoFix(), NoFix(), k0);
        __syncthreads();
        if (k0 + BKK < kend) stage_fetch<BM, BN, A_KC, B_KC, NTH>(ra, rb, la, lb, k0 + BKK);
        if (k0 <= kcap && k0 + BKK > kfloor) {
#pragma unroll
            for (int kk = 0; kk < BKK; ++kk) {
                float av[TM], bv[TN];
#pragma unroll
                for (int i = 0; i < TM; i += 4) {
                    float4 v = *reinterpret_cast<const float4*>(&sm.a[buf][kk][ty * TM + i]);
                    av[i] = v.x; av[i + 1] = v.y; av[i + 2] = v.z; av[i + 3] = v.w;
                }
#pragma unroll
                for (int j = 0; j < TN; j += 4) {
                    float4 v = *reinterpret_cast<const float4*>(&sm.b[buf][kk][j * 16 + tx * 4]);
                    bv[j] = v.x; bv[j + 1] = v.y; bv[j + 2] = v.z; bv[j + 3] = v.w;
                }
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
        }
        buf ^= 1;
    }
    __syncthreads();  // the tiles (and anything the loaders read) may be rewritten after this
}

// ---- f64 tensor-core products (DMMA) of f32 operands ---------------------------------------
// `mma_loop` computes the same tile product as `gemm_loop`, from the same loaders, on the f64
// tensor cores (mma.sync m16n8k4 .f64; m16n8k8 in the asynchronous form): every f32 operand
// converts exactly to f64, every product is exact and the sums are f64, rounded to f32 once
// at the end. That is more accurate
// than f32 FMAs and involves no TF32 (or any other) rounding of the inputs; on the H100 the f64
// tensor-core rate (65 TFLOP/s measured) is above the f32 FMA rate (58), and one instruction
// does 512 FMAs where an FFMA does 32, which frees the issue slots for the loaders' decays.
// Block tile BM × BN from NTH threads: (NTH/32) warps as WM (rows) × NTH/32/WM (columns), each
// warp a (BM/WM) × (BN/(NTH/32/WM)) tile of 16 × 8 mma tiles. A thread holds, per mma tile,
// rows g and g + 8 (g = lane/4) and columns 2·(lane%4) + {0, 1}: see mma_row / mma_col.
template <int BM, int BN, int NTH = NT>
struct __align__(16) MmaSmem {
    // f32 and k-major like GemmSmem (converted to f64 per fragment read: an f64 copy measured
    // slower, at twice the space and more registers); rows padded to 8 (mod 32) words so that
    // a warp's fragment reads (4 k rows × 8 consecutive m) fall in 32 distinct banks
    float a[2][BKK][BM + 8];
    float b[2][BKK][BN + 8];
};

template <int BM, int BN, int WM, int NTH = NT>
struct MmaShape {
    static constexpr int WARPS = NTH / 32, WN = WARPS / WM;
    static constexpr int WTM = BM / WM, WTN = BN / WN;  // the warp's tile
    static constexpr int MT = WTM / 16, NTT = WTN / 8;   // its mma tiles
    static_assert(WM * WN == WARPS && MT * 16 * WM == BM && NTT * 8 * WN == BN, "mma tiling");
    __device__ static int warp_m0() { return ((threadIdx.x >> 5) % WM) * WTM; }
    __device__ static int warp_n0() { return ((threadIdx.x >> 5) / WM) * WTN; }
};

// Tile-relative row of accumulator acc[mt][nt][r] (r = 0..3), and its column.
template <class S>
__device__ __forceinline__ int mma_row(int mt, int r) {
    return S::warp_m0() + mt * 16 + ((threadIdx.x & 31) >> 2) + (r >> 1) * 8;
}
template <class S>
__device__ __forceinline__ int mma_col(int nt, int r) {
    return S::warp_n0() + nt * 8 + (threadIdx.x & 3) * 2 + (r & 1);
}

__device__ __forceinline__ void mma_f64_16x8x4(double (&c)[4], double a0, double a1, double b0) {
    asm(
        "mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a0), "d"(a1), "d"(b0));
}

// The same with k = 8: a = (A[g][k], A[g + 8][k], A[g][k + 4], A[g + 8][k + 4]) and
// b = (B[k][g], B[k + 4][g]) for k = t (any pairing of the k slots works, if A and B agree).
__device__ __forceinline__ void mma_f64_16x8x8(double (&c)[4], const double (&a)[4], double b0, double b1) {
    asm(
        "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b0), "d"(b1));
}

template <int MT, int NTT>
__device__ __forceinline__ void zero_mma(double (&acc)[MT][NTT][4]) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTT; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0;
}

// acc[mt][nt][r] += Σ_{k in [kbeg, kend)} A[m, k] · B[k, n] (m = mma_row, n = mma_col), with
// gemm_loop's loaders and pipelining (see there). Steps entirely outside [kfloor, kcap] (the
// smallest and largest k the warp's rows need: causal tiles) skip the warp's products; the
// loaders must still give zeros past each row's own limit. `kbeg` must be a multiple of 4.
//
// `fa` / `fb` (optional): fix-ups fa(m, k, v) / fb(n, k, v) of each piece v that la / lb gave,
// with the same coordinates, applied when the piece is stored, a step after it was loaded. A
// loader that folds factors into its piece waits for its own global load at once; one that
// leaves them to a fix-up (reading shared memory) lets the load run under a step of products.
template <int BM, int BN, int WM, bool A_KC, bool B_KC, int NTH = NT, int MT, int NTT, class LA,
          class LB, class FA = NoFix, class FB = NoFix>
__device__ __forceinline__ void mma_loop(double (&acc)[MT][NTT][4], MmaSmem<BM, BN, NTH>& sm,
                                         i64 kbeg, i64 kend, const LA& la, const LB& lb,
                                         i64 kcap = 0x7fffffffffffffffll, i64 kfloor = 0,
                                         const FA& fa = FA(), const FB& fb = FB()) {
    using S = MmaShape<BM, BN, WM, NTH>;
    static_assert(S::MT == MT && S::NTT == NTT, "accumulator shape");
    using St = StageShape<BM, BN, NTH>;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm0 = S::warp_m0(), wn0 = S::warp_n0();
    float4 ra[St::NA], rb[St::NB];
    if (kbeg < kend) stage_fetch<BM, BN, A_KC, B_KC, NTH>(ra, rb, la, lb, kbeg);
    int buf = 0;
    for (i64 k0 = kbeg; k0 < kend; k0 += BKK) {
        stage_store<BM, BN, A_KC, B_KC, NTH>(sm.a[buf], sm.b[buf], ra, rb, fa, fb, k0);
        __syncthreads();
        if (k0 + BKK < kend) stage_fetch<BM, BN, A_KC, B_KC, NTH>(ra, rb, la, lb, k0 + BKK);
        if (k0 <= kcap && k0 + BKK > kfloor) {
#pragma unroll
            for (int kk = 0; kk < BKK; kk += 4) {
                double a0[MT], a1[MT], bv[NTT];
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    a0[i] = (double)sm.a[buf][kk + t][wm0 + i * 16 + g];
                    a1[i] = (double)sm.a[buf][kk + t][wm0 + i * 16 + g + 8];
                }
#pragma unroll
                for (int j = 0; j < NTT; ++j)
                    bv[j] = (double)sm.b[buf][kk + t][wn0 + j * 8 + g];
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int j = 0; j < NTT; ++j) mma_f64_16x8x4(acc[i][j], a0[i], a1[i], bv[j]);
            }
        }
        buf ^= 1;
    }
    __syncthreads();  // the tiles (and anything the loaders read) may be rewritten after this
}

// ---- mma_loop with asynchronous copies (cp.async), for whole aligned tiles ------------------
// The same product as mma_loop, but the operands go from global to shared memory by cp.async
// (16 bytes a piece, no registers on the way) through NS stages, so each step's loads are in
// flight for NS − 1 steps of products; each thread then applies the fix-ups to the pieces it
// copied itself, in place, before the step's barrier. Loaders give the address of a piece
// (pa(m, k): &A[m, k] — 4 floats along A's contiguous axis, as mma_loop's la), affine in k with
// one k stride for every m and segment (they are asked once per segment, and the pointers then
// step on: AsyncStream); pieces at k ≥ kend are zeros, not read. Every piece must be 16-byte
// aligned (the callers' fast forms). An operand contiguous
// along k is kept m-major (rows of BKK + 4 floats), the other k-major (rows of BM + 8): both
// give conflict-free fragment reads, and the copies need no transposition.
template <class T>
struct IsNoFix {
    static constexpr bool value = false;
};
template <>
struct IsNoFix<NoFix> {
    static constexpr bool value = true;
};

template <int BX, bool KC, int NS>
struct AsyncTile {
    static constexpr int R = KC ? BX : BKK, W = KC ? BKK + 4 : BX + 8;
    float t[NS][R][W];
    // the offset of (i, k) from (0, 0) within a stage (linear: async_step_mma reads a step's
    // fragments at compile-time offsets from one origin)
    __device__ static constexpr int off(int i, int k) { return KC ? i * W + k : k * W + i; }
    __device__ float* at(int st, int i, int k) { return &t[st][0][0] + off(i, k); }
};

template <int BM, int BN, bool A_KC, bool B_KC, int NS = 3>
struct __align__(16) AsyncSmem {
    AsyncTile<BM, A_KC, NS> a;
    AsyncTile<BN, B_KC, NS> b;
    unsigned long long full[NS], empty[NS];  // mma_mbar_loop's stage barriers
};

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mbar_init(unsigned long long* b, unsigned count) {
    asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
// Ends the mbarrier object at b: PTX allows its memory to serve any other purpose (data, or a
// new mbarrier.init) only once it is invalidated.
__device__ __forceinline__ void mbar_inval(unsigned long long* b) {
    asm volatile("mbarrier.inval.shared.b64 [%0];" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* b) {
    asm volatile("{\n\t.reg .b64 st;\n\tmbarrier.arrive.shared.b64 st, [%0];\n\t}" ::"r"(smem_u32(b))
                 : "memory");
}
// one arrival on b once this thread's cp.async copies so far have landed
__device__ __forceinline__ void mbar_cp_arrive(unsigned long long* b) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* b, unsigned parity) {
    const unsigned a = smem_u32(b);
    unsigned ok = 0;
    while (!ok)
        asm volatile(
            "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
            : "=r"(ok)
            : "r"(a), "r"(parity)
            : "memory");
}

// 16 bytes from global src to shared address d, or zeros when !valid (src not read).
__device__ __forceinline__ void cp_async16(unsigned d, const float* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// The thread's pieces of one operand (as stage_fetch) in flight: their source pointers (for the
// step to copy next), their shared-memory addresses in stage 0 and their k within a step.
// `start` takes the pointers of step k0 from pick(i, k) (which must be affine in k: each later
// step adds BKK·ks); `copy` copies them into stage st (zeros at pieces whose k is ≥ krem, the
// k left in the range) and moves them on a step.
template <int BX, bool KC, int NTH, int NS>
struct AsyncStream {
    static constexpr int N = Pieces<BX, NTH>::N;
    static constexpr unsigned STAGE = sizeof(float) * AsyncTile<BX, KC, NS>::R * AsyncTile<BX, KC, NS>::W;
    const float* src[N];
    unsigned dst[N];
    int kin[N];
    __device__ explicit AsyncStream(AsyncTile<BX, KC, NS>& tile) {
        each_piece<BX, KC, NTH>([&](int r, int i, int k) {
            dst[r] = (unsigned)__cvta_generic_to_shared(tile.at(0, i, k));
            kin[r] = k;
        });
    }
    template <class P>
    __device__ __forceinline__ void start(const P& pick, i64 k0) {
        each_piece<BX, KC, NTH>([&](int r, int i, int k) { src[r] = pick(i, k0 + k); });
    }
    __device__ __forceinline__ void copy(int st, int krem, i64 step) {
        each_piece<BX, KC, NTH>([&](int r, int, int) {
            cp_async16(dst[r] + st * STAGE, src[r], kin[r] < krem);
            src[r] += step;
        });
    }
};

// The same pieces, once landed, through the fix-up fx in place (not the zeros at k ≥ kend).
template <int BX, bool KC, int NTH, int NS, class FX>
__device__ __forceinline__ void async_fix(AsyncTile<BX, KC, NS>& tile, int st, i64 k0, i64 kend,
                                          const FX& fx) {
    each_piece<BX, KC, NTH>([&](int, int i, int k) {
        if (k0 + k >= kend) return;
        float4* d = reinterpret_cast<float4*>(tile.at(st, i, k));
        *d = fx(i, k0 + k, *d);
    });
}

// The products of one BKK-deep step from stage st of the asynchronous tiles (k0: the step's
// first k): per 8-deep half, each warp reads its A and B fragments (rows g, g + 8 and column t,
// t + 4 of A; row t, t + 4 and column g of B: see mma_row / mma_col) and issues its MT × NTT
// mma.m16n8k8. ka(m, k, v), unless NoFix, is applied to A's f32 elements as they are read
// (the same f32 product a fix-up of the piece in shared memory would make): A[m, k] →
// ka(m, k, A[m, k]). (Callers put a per-token factor on A: in their 16 × 32 warp tiles A has 4
// elements per thread and 8-deep half, B 8.)
template <class S, int MT, int NTT, class SM, class KA>
__device__ __forceinline__ void async_step_mma(double (&acc)[MT][NTT][4], SM& sm, int st, i64 k0,
                                               const KA& ka) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm0 = S::warp_m0(), wn0 = S::warp_n0();
    // the thread's fragment origins in stage st: A[wm0 + g, t], B[t, wn0 + g]
    const float* oa = sm.a.at(st, wm0 + g, t);
    const float* ob = sm.b.at(st, wn0 + g, t);
    auto a_at = [&](int di, int dk) { return oa[sm.a.off(di, dk)]; };
    auto b_at = [&](int dn, int dk) { return ob[sm.b.off(dn, dk)]; };
#pragma unroll
    for (int kk = 0; kk < BKK; kk += 8) {
        double av[MT][4], b0[NTT], b1[NTT];
        const i64 k = k0 + kk + t;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
            const int m = wm0 + i * 16 + g;
            if constexpr (IsNoFix<KA>::value) {
                av[i][0] = (double)a_at(i * 16, kk);
                av[i][1] = (double)a_at(i * 16 + 8, kk);
                av[i][2] = (double)a_at(i * 16, kk + 4);
                av[i][3] = (double)a_at(i * 16 + 8, kk + 4);
            } else {
                av[i][0] = (double)ka(m, k, a_at(i * 16, kk));
                av[i][1] = (double)ka(m + 8, k, a_at(i * 16 + 8, kk));
                av[i][2] = (double)ka(m, k + 4, a_at(i * 16, kk + 4));
                av[i][3] = (double)ka(m + 8, k + 4, a_at(i * 16 + 8, kk + 4));
            }
        }
#pragma unroll
        for (int j = 0; j < NTT; ++j) {
            b0[j] = (double)b_at(j * 8, kk);
            b1[j] = (double)b_at(j * 8, kk + 4);
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NTT; ++j) mma_f64_16x8x8(acc[i][j], av[i], b0[j], b1[j]);
    }
}

// The pipeline of mma_loop_async over `nseg` segments of the same K range, back to back (the
// next segment's copies in flight during this one's last steps): pa(seg, m, k), pb(seg, n, k);
// after a segment's last step, end(seg) (called by every thread; it may synchronise, and must
// leave acc as the next segment should start, e.g. zeroed).
template <int BM, int BN, int WM, bool A_KC, bool B_KC, int NTH, int NS, int MT, int NTT, class PA,
          class PB, class FA, class FB, class END>
__device__ __forceinline__ void mma_async_segments(double (&acc)[MT][NTT][4],
                                                   AsyncSmem<BM, BN, A_KC, B_KC, NS>& sm, i64 nseg,
                                                   i64 kbeg, i64 kend, const PA& pa, const PB& pb,
                                                   i64 kcap, i64 kfloor, const FA& fa, const FB& fb,
                                                   const END& end) {
    using S = MmaShape<BM, BN, WM, NTH>;
    static_assert(S::MT == MT && S::NTT == NTT, "accumulator shape");
    if (kbeg >= kend) {  // (no segment has a step: end is not called)
        __syncthreads();
        return;
    }
    // the next step to copy: segment iseg, k = kbeg + ik
    const int klen = (int)(kend - kbeg);
    i64 iseg = 0;
    int ik = 0;
    AsyncStream<BM, A_KC, NTH, NS> sa(sm.a);
    AsyncStream<BN, B_KC, NTH, NS> sb(sm.b);
    const i64 ksa = pa(0, 0, kbeg + 1) - pa(0, 0, kbeg), ksb = pb(0, 0, kbeg + 1) - pb(0, 0, kbeg);
    auto begin = [&](i64 sg) {
        sa.start([&](int m, i64 k) { return pa(sg, m, k); }, kbeg);
        sb.start([&](int n, i64 k) { return pb(sg, n, k); }, kbeg);
    };
    begin(0);
    auto issue = [&](int st) {
        if (iseg < nseg) {
            sa.copy(st, klen - ik, BKK * ksa);
            sb.copy(st, klen - ik, BKK * ksb);
            ik += BKK;
            if (ik >= klen) {
                ik = 0;
                if (++iseg < nseg) begin(iseg);
            }
        }
        cp_async_commit();  // (an empty group past the end keeps the count uniform)
    };
#pragma unroll
    for (int st = 0; st < NS - 1; ++st) issue(st);
    int st = 0;
    for (i64 seg = 0; seg < nseg; ++seg) {
        for (i64 k0 = kbeg; k0 < kend; k0 += BKK) {
            cp_async_wait<NS - 2>();  // this thread's copies of step k0 have landed
            if (!IsNoFix<FA>::value) async_fix<BM, A_KC, NTH>(sm.a, st, k0, kend, fa);
            if (!IsNoFix<FB>::value) async_fix<BN, B_KC, NTH>(sm.b, st, k0, kend, fb);
            __syncthreads();  // every piece of step k0 in place; every read of the step before done
            issue(st == 0 ? NS - 1 : st - 1);
            if (k0 <= kcap && k0 + BKK > kfloor) async_step_mma<S>(acc, sm, st, k0, NoFix());
            st = st == NS - 1 ? 0 : st + 1;
        }
        end(seg);
    }
    cp_async_wait<0>();
    __syncthreads();  // the tiles may be rewritten after this
}

template <int BM, int BN, int WM, bool A_KC, bool B_KC, int NTH = NT, int NS = 3, int MT, int NTT,
          class PA, class PB, class FA = NoFix, class FB = NoFix>
__device__ __forceinline__ void mma_loop_async(double (&acc)[MT][NTT][4],
                                               AsyncSmem<BM, BN, A_KC, B_KC, NS>& sm, i64 kbeg,
                                               i64 kend, const PA& pa, const PB& pb,
                                               i64 kcap = 0x7fffffffffffffffll, i64 kfloor = 0,
                                               const FA& fa = FA(), const FB& fb = FB()) {
    mma_async_segments<BM, BN, WM, A_KC, B_KC, NTH>(
        acc, sm, 1, kbeg, kend, [&](i64, int m, i64 k) { return pa(m, k); },
        [&](i64, int n, i64 k) { return pb(n, k); }, kcap, kfloor, fa, fb, [](i64) {});
}

// The pipeline of mma_mbar_loop as an object, so that a block can issue the first steps'
// copies (begin: the barriers, then NS − 1 steps) before other set-up work and run the steps
// later (run); begin's klen may be a lower bound of run's (the copies of the first NS − 1 steps
// are whole whenever klen ≥ (NS − 1) BKK). Every thread of the block calls both, with no early
// exit in between.
template <int BM, int BN, bool A_KC, bool B_KC, int NTH, int NS>
struct MbarPipe {
    AsyncSmem<BM, BN, A_KC, B_KC, NS>& sm;
    AsyncStream<BM, A_KC, NTH, NS> sa;
    AsyncStream<BN, B_KC, NTH, NS> sb;
    i64 kbeg = 0, ksa = 0, ksb = 0;
    int issued = 0;
    __device__ explicit MbarPipe(AsyncSmem<BM, BN, A_KC, B_KC, NS>& s) : sm(s), sa(s.a), sb(s.b) {}
    __device__ void issue(int st, int klen) {
        sa.copy(st, klen - issued * BKK, BKK * ksa);
        sb.copy(st, klen - issued * BKK, BKK * ksb);
        mbar_cp_arrive(&sm.full[st]);
        ++issued;
    }
    template <class PA, class PB>
    __device__ void begin(i64 kb, int klen, const PA& pa, const PB& pb) {
        if (threadIdx.x == 0) {
#pragma unroll
            for (int s = 0; s < NS; ++s) {
                mbar_init(&sm.full[s], NTH);
                mbar_init(&sm.empty[s], NTH);
            }
        }
        __syncthreads();
        kbeg = kb;
        ksa = pa(0, kb + 1) - pa(0, kb);
        ksb = pb(0, kb + 1) - pb(0, kb);
        sa.start(pa, kb);
        sb.start(pb, kb);
#pragma unroll
        for (int s = 0; s < NS - 1; ++s)
            if (s * BKK < klen) issue(s, klen);
    }
    template <int WM, int MT, int NTT, class KA>
    __device__ void run(double (&acc)[MT][NTT][4], i64 kend, i64 kcap, const KA& ka) {
        using S = MmaShape<BM, BN, WM, NTH>;
        static_assert(S::MT == MT && S::NTT == NTT, "accumulator shape");
        const int klen = (int)(kend - kbeg), nsteps = (klen + BKK - 1) / BKK;
        const int kc = (int)(min(kcap, kend) - kbeg);
        int st = 0;
        for (int n = 0; n < nsteps; ++n) {
            const int k0 = n * BKK;  // relative to kbeg
            mbar_wait(&sm.full[st], (unsigned)(n / NS) & 1u);
            if (k0 <= kc) async_step_mma<S>(acc, sm, st, kbeg + k0, ka);
            mbar_arrive(&sm.empty[st]);
            const int nx = n + NS - 1;  // the step to copy next, into the stage step n − 1 used
            if (nx < nsteps) {
                const int s2 = nx % NS;
                if (n >= 1) mbar_wait(&sm.empty[s2], (unsigned)((n - 1) / NS) & 1u);
                issue(s2, klen);
            }
            st = st == NS - 1 ? 0 : st + 1;
        }
        // Every read and barrier operation done; then the barriers are invalidated before their
        // memory is reused. Callers keep the shared memory of several pipelines (and of staged
        // results) in one union, so another pipeline's tiles or a staged result lie where these
        // barriers were: writing there while they are still valid mbarrier objects is undefined
        // in PTX, and on an H100 it let the barriers' state overwrite chunk_scan's tile of the
        // states (NaN in y's columns 38 and 39, whose rows of P lay on the previous pipeline's
        // barriers in stage 3).
        __syncthreads();
        if (threadIdx.x == 0) {
#pragma unroll
            for (int s = 0; s < NS; ++s) {
                mbar_inval(&sm.full[s]);
                mbar_inval(&sm.empty[s]);
            }
        }
        __syncthreads();  // the tiles and the barriers' memory may be reused
    }
};

// mma_loop_async without the block barrier of each step, and so without fix-ups in shared
// memory (ka is applied to A as the fragments are read: async_step_mma): a stage's copies
// complete one mbarrier (full: each thread arrives once its own copies have landed) and its
// readers another (empty), so a warp waits only for the step it reads to have landed and,
// before it refills a stage, for every thread to have read that stage; warps of a block run up
// to a step apart instead of meeting at every step. ka must be finite for every k of the
// steps (kend rounded up to BKK).
template <int BM, int BN, int WM, bool A_KC, bool B_KC, int NTH = NT, int NS = 3, int MT, int NTT,
          class PA, class PB, class KA = NoFix>
__device__ __forceinline__ void mma_mbar_loop(double (&acc)[MT][NTT][4],
                                              AsyncSmem<BM, BN, A_KC, B_KC, NS>& sm, i64 kbeg,
                                              i64 kend, const PA& pa, const PB& pb,
                                              i64 kcap = 0x7fffffffffffffffll, const KA& ka = KA()) {
    if (kbeg >= kend) return;
    MbarPipe<BM, BN, A_KC, B_KC, NTH, NS> pipe(sm);
    pipe.begin(kbeg, (int)(kend - kbeg), pa, pb);
    pipe.template run<WM>(acc, kend, kcap, ka);
}

// acc[·][·][r] *= e[mma_row(·, r)]: the accumulator rows scaled by a shared-memory vector
// (f32 or f64).
template <class S, int MT, int NTT, class T>
__device__ __forceinline__ void scale_mma_rows(double (&acc)[MT][NTT][4], const T* e) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTT; ++nt)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mt][nt][r] *= (double)e[mma_row<S>(mt, r)];
}

// acc *= f.
template <int MT, int NTT>
__device__ __forceinline__ void scale_mma_all(double (&acc)[MT][NTT][4], double f) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTT; ++nt)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mt][nt][r] *= f;
}

// acc += Σ_{k < nn} (R[r0 + m, k] · e[m]) · M[c0 + n, k]: rows of R (row stride rs, rows from
// rlen on are zero) scaled per tile row by e (shared memory), against rows of M (row stride nn,
// rows from mlen on are zero); both contiguous along k. The inter-chunk products of chunk_scan
// (C·exp(a) against the states) and of dx (B·e against dstates). F: the fast form (whole
// tiles, 16-byte aligned rows, nn a multiple of BKK; the caller checks). On the f64 tensor cores
// (mma_loop).
template <bool F, int BM, int BN, int WM, int NTH = NT, int MT, int NTT>
__device__ __forceinline__ void scaled_rows_mma(double (&acc)[MT][NTT][4], MmaSmem<BM, BN, NTH>& sm,
                                                const float* R, i64 rs, i64 r0, i64 rlen,
                                                const float* e, const float* M, i64 c0, i64 mlen,
                                                i64 nn) {
    mma_loop<BM, BN, WM, true, true, NTH>(
        acc, sm, 0, nn,
        [&](int m, i64 k) -> float4 {  // R[r0 + m, k .. + 4) · e[m]
            const i64 r = r0 + m;
            const float* row = R + r * rs;
            if (F) return f4_scale(ld4_fast(row + k), e[m]);
            return r < rlen ? f4_scale(ld4(row, k, nn), e[m]) : f4_zero();
        },
        [&](int n, i64 k) -> float4 {  // M[c0 + n, k .. + 4)
            const i64 c = c0 + n;
            if (F) return ld4_fast(M + c * nn + k);
            return c < mlen ? ld4(M + c * nn, k, nn) : f4_zero();
        });
}

// Inclusive block scan in f64 (blockDim.x == NT); `red` must hold 32 doubles. Synchronises.
__device__ double block_inclusive_scan_f64(double v, double* red, double& total) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads();
    if (lane == 31) red[wid] = v;
    __syncthreads();
    if (wid == 0) {
        double w = (lane < (NT / 32)) ? red[lane] : 0.0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            double n = __shfl_up_sync(0xffffffffu, w, o);
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
    __device__ explicit BlockIdx(i64 linear) : rest(linear) {}
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
