// forward.cu — the five forward kernels of the chunked SSD (docs/design.md §2.5), f32.
//
// Layouts (row-major): x (b,l,h,p), dt (b,l,h), B/C (b,l,g,n), dt_bhcq/dacs_bhcq (b,h,c,Q),
// states (b,c,h,p,n), cb (b,c,g,Q,Q), seq_idx (b,l) i32. Every block decodes its coordinates
// from blockIdx.x (innermost first), so grids of more than 65535 chunks·heads work.

// chunk_cumsum [_chunk_cumsum_fwd]: Δ and a_l = Σ_{k≤l in chunk} Δ_k A_h, one block per
// (b, h, c), block-parallel inclusive scan over the chunk (in NT-sized segments with a carry),
// in f64: the cumsum is returned rounded (dacs) and, optionally, its rounding error (dacs_lo).
extern "C" __global__ void __launch_bounds__(NT) chunk_cumsum_kernel(
    const float* __restrict__ dt, const float* __restrict__ A, const float* __restrict__ dt_bias,
    float* __restrict__ dt_out, float* __restrict__ dacs_out, float* __restrict__ dacs_lo_out, i64 nb,
    i64 l, i64 nh, i64 q, i64 nc, int softplus, float lo, float hi) {
    __shared__ double red[32];
    BlockIdx bi;
    const i64 c = bi.next(nc), h = bi.next(nh), b = bi.rest;
    const float a = A[h];
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    const i64 obase = ((b * nh + h) * nc + c) * q;
    double carry = 0.0;
    for (i64 base = 0; base < q; base += NT) {
        const i64 i = base + threadIdx.x;
        const i64 t = c * q + i;
        float d = 0.0f;
        if (i < q && t < l) d = process_dt_f(dt[(b * l + t) * nh + h], bias, softplus, lo, hi);
        double total;
        const double incl = block_inclusive_scan_f64((double)d * (double)a, red, total) + carry;
        if (i < q) {
            const float hv = (float)incl;
            dt_out[obase + i] = d;
            dacs_out[obase + i] = hv;
            if (dacs_lo_out) dacs_lo_out[obase + i] = (float)(incl - (double)hv);
        }
        carry += total;
    }
}

// chunk_state [_chunk_state_fwd] (mode 0) and chunk_scan_bwd_dstates (mode 1): per (b, c, h)
//   out[p, n] = Σ_s w_s · X[s, p] · Y[s, n]
// mode 0: X = x, Y = B, w_s = [id_s = id_last] exp(a_last − a_s) Δ_s   → S_c
// mode 1: X = dy, Y = C, w_s = [id_s = id_prev] exp(a_s)                 → dP_c
// Tile 64 (p) × 64 (n) on the f64 tensor cores (8 warps of 16 × 32), K = the chunk's tokens.
// Whole chunks without seq_idx whose tiles are whole and 16-byte aligned take the
// asynchronous-copy form (mma_mbar_loop, w_s applied as the fragments are read); the rest
// the masked loaders.
//
// The (p, n) tiles of one (b, c, h).
__device__ __forceinline__ i64 chunk_state_tiles(i64 np, i64 nn) {
    return ((np + 63) / 64) * ((nn + 63) / 64);
}

// The product of one block: (b, c, h) and its 64 × 64 tile of (p, n), tile = pt · tn + nt,
// rounded to f32 and staged in shared memory, then handed to epi(st, p0, n0): element (p, n) is
// st[(p − p0) · CS_LD + n − n0] (for p < np, n < nn), so the epilogue can walk the tile with
// coalesced accesses (each_state_elem).
constexpr int CS_LD = 72;  // the staged tile's row stride (2-way conflicts at most on its stores)
template <class Epi>
__device__ __forceinline__ void chunk_state_block(
    i64 b, i64 c, i64 h, i64 tile, int mode, const float* __restrict__ Y, const float* __restrict__ X,
    const float* __restrict__ dt, const float* __restrict__ dacs, const float* __restrict__ dlo,
    const int* __restrict__ seq, i64 l, i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc,
    const Epi& epi) {
    constexpr int BM = 64, BN = 64, WM = 4;
    using S = MmaShape<BM, BN, WM>;
    __shared__ union {
        MmaSmem<BM, BN> g;                   // the general form's tiles
        AsyncSmem<BM, BN, false, false, 4> a;  // the fast form's
        float st[BM * CS_LD];               // the result, staged for the epilogue
    } smu;
    __shared__ float ws[QS];  // w_s of the chunk's first QS tokens (0 past its end)
    const i64 tn = (nn + BN - 1) / BN;
    const i64 nt = tile % tn, pt = tile / tn;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const int ref_id = mode == 0 ? chunk_end_id(seq, l, q, b, c) : prev_end_id(seq, l, q, b, c);
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
    const float a_last = dac[q - 1], lo_last = lo_at(dlc, q - 1);
    const i64 p0 = pt * BM, n0 = nt * BN;
    const float* Xb = X + ((b * l + c0) * nh + h) * np;
    const float* Yb = Y + ((b * l + c0) * ng + g) * nn;
    auto w_at = [&](i64 s) {  // w_s (0 past the sequence or across a seq_idx boundary)
        if (s >= len || seq_at(seq, l, b, c0 + s) != ref_id) return 0.0f;
        return mode == 0 ? exp_seg(a_last, lo_last, dac[s], lo_at(dlc, s)) * dtc[s]
                         : exp_hl(dac[s], lo_at(dlc, s));
    };
    const bool fast = len == q && q <= QS && !seq && np % 4 == 0 && nn % 4 == 0 &&
                      p0 + BM <= np && n0 + BN <= nn && aligned16(X) && aligned16(Y);
    // the fast form's first copies go out before the w_s table is set up
    MbarPipe<BM, BN, false, false, NT, 4> pipe(smu.a);
    if (fast)
        pipe.begin(0, (int)len, [&](int m, i64 s) { return Xb + s * nh * np + p0 + m; },
                   [&](int n, i64 s) { return Yb + s * ng * nn + n0 + n; });
    for (int s = threadIdx.x; s < QS; s += NT) ws[s] = w_at(s);
    __syncthreads();
    double acc[S::MT][S::NTT][4];
    zero_mma(acc);
    if (fast) {
        // (w_s as X's fragments are read, the operand with the fewer elements per thread: ws
        // is 0 past the chunk, so every k of the steps has its factor)
        pipe.template run<WM>(acc, len, 0x7fffffffffffffffll,
                              [&](int, i64 s, float v) { return v * ws[s]; });
    } else {
        mma_loop<BM, BN, WM, false, false>(
            acc, smu.g, 0, len,
            [&](int m, i64 s) -> float4 {  // X[s, p0 + m .. + 4)
                return s < len ? ld4(Xb + s * nh * np, p0 + m, np) : f4_zero();
            },
            [&](int n, i64 s) -> float4 {  // Y[s, n0 + n .. + 4)
                return s < len ? ld4(Yb + s * ng * nn, n0 + n, nn) : f4_zero();
            },
            0x7fffffffffffffffll, 0, [&](int, i64 s, float4 v) {  // · w_s
                return f4_scale(v, s < QS ? ws[s] : w_at(s));
            });
    }
    __syncthreads();  // every warp's last fragment reads are done
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int j = 0; j < S::NTT; ++j)
                smu.st[mma_row<S>(mt, r) * CS_LD + mma_col<S>(j, r)] = (float)acc[mt][j][r];
    __syncthreads();
    epi(smu.st, p0, n0);
}

// The staged 64 × 64 tile at (p0, n0), clipped to np × nn, as fn(v, p, n), thread by thread
// along rows (coalesced).
template <class F>
__device__ __forceinline__ void each_state_elem(const float* st, i64 p0, i64 n0, i64 np, i64 nn,
                                                const F& fn) {
#pragma unroll
    for (int e = threadIdx.x; e < 64 * 64; e += NT) {
        const int i = e / 64, j = e % 64;
        const i64 p = p0 + i, n = n0 + j;
        if (p < np && n < nn) fn(st[i * CS_LD + j], p, n);
    }
}

extern "C" __global__ void __launch_bounds__(NT, 4) chunk_state_kernel(
    int mode, const float* __restrict__ Y, const float* __restrict__ X, const float* __restrict__ dt,
    const float* __restrict__ dacs, const float* __restrict__ dlo, const int* __restrict__ seq,
    float* __restrict__ out, i64 nb, i64 l, i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    BlockIdx bi;
    const i64 tile = bi.next(chunk_state_tiles(np, nn)), h = bi.next(nh), c = bi.next(nc),
              b = bi.rest;
    chunk_state_block(
        b, c, h, tile, mode, Y, X, dt, dacs, dlo, seq, l, nh, np, ng, nn, q, nc,
        [&](const float* st, i64 p0, i64 n0) {
            float* ob = out + ((b * nc + c) * nh + h) * np * nn;
            each_state_elem(st, p0, n0, np, nn, [&](float v, i64 p, i64 n) { ob[p * nn + n] = v; });
        });
}

// The decay of the state entering chunk c into H_c: [id_end(c) = id_end(c−1)] exp(a_last,c).
__device__ __forceinline__ float chunk_decay(const float* dacs, const float* dlo, const int* seq,
                                             i64 l, i64 q, i64 nh, i64 nc, i64 b, i64 h, i64 c) {
    const bool same = chunk_end_id(seq, l, q, b, c) == prev_end_id(seq, l, q, b, c);
    const i64 il = ((b * nh + h) * nc + c) * q + q - 1;
    return same ? exp_hl(dacs[il], lo_at(dlo, il)) : 0.0f;
}

__device__ __forceinline__ int ld_acquire(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release(int* p, int v) {
    asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// chunk_state and state_passing in one kernel (the combined forward): the block of chunk c
// computes S_c as chunk_state_kernel does, waits for chunk c − 1's block of the same tile to
// have written P_c = H_{c−1}, and writes H_c = decay_c · P_c + S_c as P_{c+1} (fin for the last
// chunk; P_0 = init, or 0, from chunk 0's block). The same f32 operations as state_passing_kernel,
// in the same order, so the results are those of the two kernels. Blocks take their coordinates
// from a ticket (sync[0], from 0; innermost first tile, h, b, c), so a block's predecessor has
// always started before it and the wait cannot deadlock; chunk c − 1's blocks are a whole row of
// b · h · tiles tickets ahead, so they have mostly finished by the time they are waited for.
// sync[1 + ((b·nh + h)·tiles + tile)·nc + c] = 1 once P_c of that tile is written; sync is zero
// at launch.
extern "C" __global__ void __launch_bounds__(NT, 4) chunk_state_passing_kernel(
    const float* __restrict__ B, const float* __restrict__ x, const float* __restrict__ dt,
    const float* __restrict__ dacs, const float* __restrict__ dlo, const int* __restrict__ seq,
    const float* __restrict__ init, float* __restrict__ prev, float* __restrict__ fin,
    int* __restrict__ sync, i64 nb, i64 l, i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    __shared__ int ticket;
    if (threadIdx.x == 0) ticket = atomicAdd(sync, 1);
    __syncthreads();
    const i64 tiles = chunk_state_tiles(np, nn), pn = np * nn;
    BlockIdx bi((i64)ticket);
    const i64 tile = bi.next(tiles), h = bi.next(nh), b = bi.next(nb), c = bi.rest;
    chunk_state_block(
        b, c, h, tile, 0, B, x, dt, dacs, dlo, seq, l, nh, np, ng, nn, q, nc,
        [&](const float* st, i64 p0, i64 n0) {
            int* ready = sync + 1 + ((b * nh + h) * tiles + tile) * nc;
            const float decay = chunk_decay(dacs, dlo, seq, l, q, nh, nc, b, h, c);
            float* pc = prev + ((b * nc + c) * nh + h) * pn;
            const float* hin = pc;
            if (c == 0) {
                hin = init ? init + (b * nh + h) * pn : nullptr;
            } else {
                if (threadIdx.x == 0)
                    while (ld_acquire(ready + c) == 0) __nanosleep(32);
                __syncthreads();
            }
            float* hout = c + 1 < nc ? pc + nh * pn : fin + (b * nh + h) * pn;
            each_state_elem(st, p0, n0, np, nn, [&](float v, i64 p, i64 n) {
                const i64 e = p * nn + n;
                const float H = hin ? __ldcg(hin + e) : 0.0f;
                if (c == 0) pc[e] = H;
                hout[e] = fmaf(decay, H, v);
            });
            if (c + 1 < nc) {
                __threadfence();
                __syncthreads();
                if (threadIdx.x == 0) st_release(ready + c + 1, 1);
            }
        });
}

// state_passing [_state_passing_fwd]: one thread per (b, h, p·n) element, sequential over chunks:
// P_c = H_{c−1}; H_c = [id_end(c) = id_end(c−1)] exp(a_last,c) H_{c−1} + S_c.
extern "C" __global__ void __launch_bounds__(NT) state_passing_kernel(
    const float* __restrict__ states, const float* __restrict__ dacs, const float* __restrict__ dlo,
    const float* __restrict__ init, const int* __restrict__ seq, float* __restrict__ prev, float* __restrict__ fin, i64 nb, i64 l,
    i64 nh, i64 pn, i64 q, i64 nc) {
    const i64 nblk = (pn + NT - 1) / NT;
    BlockIdx bi;
    const i64 eb = bi.next(nblk), h = bi.next(nh), b = bi.rest;
    const i64 e = eb * NT + threadIdx.x;
    if (e >= pn) return;
    float H = init ? init[(b * nh + h) * pn + e] : 0.0f;
    // unrolled so that the loads of several chunks (independent of H) are in flight together
#pragma unroll 4
    for (i64 c = 0; c < nc; ++c) {
        const i64 o = ((b * nc + c) * nh + h) * pn + e;
        prev[o] = H;
        H = fmaf(chunk_decay(dacs, dlo, seq, l, q, nh, nc, b, h, c), H, states[o]);
    }
    fin[(b * nh + h) * pn + e] = H;
}

// bmm_chunk [_bmm_chunk_fwd]: CB[i, j] = C_i · B_j per (b, c, g); 0 across ids and at padding.
// Tile 64 (i) × 64 (j) on the f64 tensor cores (8 warps), K = n. With `causal`,
// tiles entirely above the diagonal are skipped (left unwritten: the combined op never reads
// them).
extern "C" __global__ void __launch_bounds__(NT, 3) bmm_chunk_kernel(
    const float* __restrict__ C, const float* __restrict__ B, const int* __restrict__ seq,
    float* __restrict__ cb, i64 nb, i64 l, i64 ng, i64 nn, i64 q, i64 nc, int causal) {
    constexpr int BM = 64, BN = 64, WM = 4;
    using S = MmaShape<BM, BN, WM>;
    __shared__ union {
        MmaSmem<BM, BN> g;                 // the general form's tiles
        AsyncSmem<BM, BN, true, true> a;  // the fast form's
    } smu;
    const i64 ti = (q + BM - 1) / BM, tj = (q + BN - 1) / BN;
    BlockIdx bi;
    const i64 jt = bi.next(tj), it = bi.next(ti), g = bi.next(ng), c = bi.next(nc), b = bi.rest;
    const i64 i0 = it * BM, j0 = jt * BN;
    if (causal && j0 > i0 + BM - 1) return;
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const float* Cb = C + ((b * l + c0) * ng + g) * nn;
    const float* Bb = B + ((b * l + c0) * ng + g) * nn;
    const bool fast = i0 + BM <= len && j0 + BN <= len && nn % 4 == 0 && aligned16(C) && aligned16(B);
    double acc[S::MT][S::NTT][4];
    zero_mma(acc);
    if (fast)
        mma_loop_async<BM, BN, WM, true, true>(
            acc, smu.a, 0, nn, [&](int m, i64 k) { return Cb + (i0 + m) * ng * nn + k; },
            [&](int n, i64 k) { return Bb + (j0 + n) * ng * nn + k; });
    else
        mma_loop<BM, BN, WM, true, true>(
            acc, smu.g, 0, nn,
            [&](int m, i64 k) -> float4 {  // C[i, k .. + 4)
                const i64 i = i0 + m;
                return i < len ? ld4(Cb + i * ng * nn, k, nn) : f4_zero();
            },
            [&](int n, i64 k) -> float4 {  // B[j, k .. + 4)
                const i64 j = j0 + n;
                return j < len ? ld4(Bb + j * ng * nn, k, nn) : f4_zero();
            });
    float* ob = cb + ((b * nc + c) * ng + g) * q * q;
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 ii = i0 + mma_row<S>(mt, r);
            if (ii >= q) continue;
            const int idi = ii < len ? seq_at(seq, l, b, c0 + ii) : 0;
#pragma unroll
            for (int j = 0; j < S::NTT; ++j) {
                const i64 jj = j0 + mma_col<S>(j, r);
                if (jj >= q) continue;
                float v = 0.0f;
                if (ii < len && jj < len && idi == seq_at(seq, l, b, c0 + jj)) v = (float)acc[mt][j][r];
                ob[ii * q + jj] = v;
            }
        }
}

// chunk_scan [_chunk_scan_fwd]: per (b, c, h), rows l of a 64-row tile, columns p of a 64 tile
// (f64 tensor-core products, mma_loop; 8 warps of 16 × 32):
//   y_l = [id_l = id_prev] exp(a_l) C_l · P_c + Σ_{s≤l} CB[l, s] exp(a_l − a_s) Δ_s x_s + D x_l
//   out = y ⊙ silu(z) when z (and y is stored as well).
extern "C" __global__ void __launch_bounds__(NT, 3) chunk_scan_kernel(
    const float* __restrict__ cb, const float* __restrict__ x, const float* __restrict__ dt,
    const float* __restrict__ dacs, const float* __restrict__ dlo, const float* __restrict__ C,
    const float* __restrict__ P,
    const float* __restrict__ D, int d_per_channel, const float* __restrict__ z,
    const int* __restrict__ seq, float* __restrict__ out, float* __restrict__ y_out, i64 nb, i64 l,
    i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    constexpr int BM = 64, BN = 64, WM = 4;
    using S = MmaShape<BM, BN, WM>;
    __shared__ union {
        MmaSmem<BM, BN> g;                               // the general form's tiles
        AsyncSmem<BM, BN, true, false, 4> cx;            // the fast form's: CB against x
        AsyncSmem<BM, BN, true, true, 4> cp;             //                  C against P
    } smu;
    auto& sm = smu.g;
    __shared__ float dl[BM], dll[BM], erow[BM], urow[BM];
    __shared__ float ka[QS], kal[QS], kdt[QS];  // a, its lo part and Δ of the chunk's first QS s
    __shared__ float kx[QS];                    // exp(a_l0 − a_s) Δ_s for s < min(kend, QS)
    __shared__ float dfrow[BM];                 // D exp(a_l0 − a_l) (the flat form's D)
    __shared__ double erow64[BM];               // erow in f64 (the flat form's factor of C_l · P_c)
    const i64 tl = (q + BM - 1) / BM, tp = (np + BN - 1) / BN;
    BlockIdx bi;
    const i64 pt = bi.next(tp), lt = bi.next(tl), h = bi.next(nh), c = bi.next(nc), b = bi.rest;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 l0 = lt * BM, p0 = pt * BN;
    if (l0 >= len) return;  // padded rows produce no output
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
    const int pid = prev_end_id(seq, l, q, b, c);
    const i64 kend = min(len, l0 + BM);
    const float* cbb = cb + ((b * nc + c) * ng + g) * q * q;
    const float* xb = x + ((b * l + c0) * nh + h) * np;
    const float* Cb = C + ((b * l + c0) * ng + g) * nn;
    const float* Pb = P + ((b * nc + c) * nh + h) * np * nn;
    const bool fast = len == q && q % 4 == 0 && q <= QS && l0 + BM <= q && !seq && np % 4 == 0 &&
                      nn % BKK == 0 && p0 + BN <= np && aligned16(cb) && aligned16(x) &&
                      aligned16(C) && aligned16(P);
    auto cb_p = [&](int m, i64 s) { return cbb + (l0 + m) * q + s; };
    auto x_p = [&](int n, i64 s) { return xb + s * nh * np + p0 + n; };
    // The fast form's first product over CB and x starts at k = 0 whatever the tests below decide
    // (left of the diagonal, or the diagonal tile from 0), over at least BM ≥ 3 steps: its first
    // copies go out before the set-up.
    MbarPipe<BM, BN, true, false, NT, 4> cx0(smu.cx);
    if (fast) cx0.begin(0, BM, cb_p, x_p);
    const float ar = dac[l0], lr = lo_at(dlc, l0);
    // The split decay exp(a_l − a_s) = exp(a_l − a_l0) · exp(a_l0 − a_s) for the columns s < l0
    // of the tiles left of the diagonal: both factors ≤ 1 where a does not rise (a_s ≥ a_l0 ≥
    // a_l), so neither overflows and one underflows only where the true decay is smaller
    // still. Then no product there needs a factor per element: column s (of CB in the fast
    // form, of x's row s in the general one) takes exp(a_l0 − a_s) Δ_s and the f64 sums take
    // u_l. Where a rises anywhere in [0, l0 + BM) the whole block keeps the per-element form.
    // Where a also falls by at most FLAT across the diagonal tile (the block is "flat"), the
    // diagonal tile takes the same split, exp(a_l − a_s) = u_l · exp(a_l0 − a_s) with the second
    // factor now ≥ 1 but ≤ e^FLAT: CB[l, s] takes the column factor from a table, with no exp per
    // element. Both factors are exp_seg_exact's, so the split costs about an ulp.
    constexpr float FLAT = 40.0f;
    bool rises = false, steep = false;
    for (i64 s = threadIdx.x; s < kend; s += NT) {
        const float a = dac[s], al = lo_at(dlc, s);
        const float e = (a - ar) + (al - lr);
        if (s < l0 ? e < 0.0f : e > 0.0f) rises = true;
        if (e < -FLAT) steep = true;
        if (s < QS) {
            const float d = dtc[s];
            ka[s] = a;
            kal[s] = al;
            kdt[s] = d;
            kx[s] = exp_seg_exact(ar, lr, a, al) * d;
        }
    }
    const bool dfold = D && !d_per_channel;
    const float dh = dfold ? D[h] : 0.0f;
    if (threadIdx.x < BM) {
        const i64 i = l0 + threadIdx.x;
        float a = 0.0f, al = 0.0f, e = 0.0f;
        double e64 = 0.0;
        if (i < len) {
            a = dac[i];
            al = lo_at(dlc, i);
            if (seq_at(seq, l, b, c0 + i) == pid) {
                e = exp_hl(a, al);
                e64 = exp((double)a + (double)al);
            }
        }
        dl[threadIdx.x] = a;
        dll[threadIdx.x] = al;
        erow[threadIdx.x] = e;
        urow[threadIdx.x] = i < len ? exp_seg_exact(a, al, ar, lr) : 0.0f;  // u_l = exp(a_l − a_l0)
        dfrow[threadIdx.x] = i < len ? dh * exp_seg_exact(ar, lr, a, al) : 0.0f;
        erow64[threadIdx.x] = e64;
    }
    // (flat also asks a_l0 > −500, so that exp(−a_l0) and exp(a_l) ≥ exp(a_l0 − FLAT) are normal
    // f64 numbers: the flat form's C · P product scales the f64 sums by them)
    const bool any_rise = __syncthreads_or(rises),
               flat = !any_rise && !__syncthreads_or(steep) && (double)ar + (double)lr > -500.0;
    const i64 kdiag = any_rise ? 0 : l0;
    // D (one per head) joins the fast form's diagonal tile: CB[l, l] Δ_l + D against x_l.
    const bool dfast = fast && dfold;
    double acc[S::MT][S::NTT][4];
    zero_mma(acc);
    auto run = [&](auto fast_form) {
        constexpr bool F = decltype(fast_form)::value;
        // a_s, lo_s, Δ_s: shared memory for s < QS (always, in the fast form)
        auto sa = [&](i64 s) { return F || s < QS ? ka[s] : dac[s]; };
        auto sl = [&](i64 s) { return F || s < QS ? kal[s] : lo_at(dlc, s); };
        auto sd = [&](i64 s) { return F || s < QS ? kdt[s] : dtc[s]; };
        // The general form's loaders give the operands as stored; its fix-ups apply the factors
        // a step later (the fast form applies the same factors as the fragments are read).
        auto cb_at = [&](int m, i64 s) -> float4 {  // CB[i, s .. + 4), s < kend (0 past row i)
            const i64 i = l0 + m;
            return i < len ? ld4(cbb + i * q, s, i + 1) : f4_zero();
        };
        auto x_at = [&](int n, i64 s) -> float4 {  // x[s, p .. + 4)
            return s < len ? ld4(xb + s * nh * np, p0 + n, np) : f4_zero();
        };
        auto x_fix = [&](int, i64 s, float4 v) {  // · exp(a_l0 − a_s) Δ_s (left of the diagonal)
            return f4_scale(v, s < QS ? kx[s] : exp_seg_exact(ar, lr, sa(s), sl(s)) * sd(s));
        };
        // exp(a_i − a_s) Δ_s for row i = l0 + m (the per-element factor of the diagonal tile)
        auto f_el = [&](int m, i64 s) { return exp_seg(dl[m], dll[m], sa(s), sl(s)) * sd(s); };
        auto cb_fix = [&](int m, i64 s, float4 v) {  // · exp(a_i − a_s) Δ_s, 0 for s > i
            const i64 i = l0 + m;
            if (i >= len) return f4_zero();
            v.x = s <= i ? v.x * f_el(m, s) : 0.0f;
            v.y = s + 1 <= i ? v.y * f_el(m, s + 1) : 0.0f;
            v.z = s + 2 <= i ? v.z * f_el(m, s + 2) : 0.0f;
            v.w = s + 3 <= i ? v.w * f_el(m, s + 3) : 0.0f;
            return v;
        };
        const i64 kcap = l0 + S::warp_m0() + S::WTM - 1;  // causal: a warp's last row's s
        if constexpr (F) {
            // whole aligned tiles: asynchronous copies (mma_mbar_loop), the factors applied as
            // the fragments are read
            auto inter = [&](const auto& fa) {  // + C_l · P_c, C's elements through fa
                mma_mbar_loop<BM, BN, WM, true, true>(
                    acc, smu.cp, 0, nn, [&](int m, i64 k) { return Cb + (l0 + m) * ng * nn + k; },
                    [&](int n, i64 k) { return Pb + (p0 + n) * nn + k; }, 0x7fffffffffffffffll,
                    fa);
            };
            // left of the diagonal: CB[l, s] · exp(a_l0 − a_s) Δ_s (on CB, the operand with the
            // fewer elements per thread; kdiag is a multiple of BKK, so every k of the steps has
            // its factor)
            if (kdiag > 0)
                cx0.template run<WM>(acc, kdiag, 0x7fffffffffffffffll,
                                     [&](int, i64 s, float v) { return v * kx[s]; });
            // the diagonal tile's product: the primed pipeline when it is the first
            auto diag = [&](const auto& fa) {
                if (kdiag == 0) cx0.template run<WM>(acc, kend, kcap, fa);
                else
                    mma_mbar_loop<BM, BN, WM, true, false>(acc, smu.cx, kdiag, kend, cb_p, x_p,
                                                           kcap, fa);
            };
            // The diagonal tile: CB[l, s] · f_s (0 for s > l), plus D on row l's own column.
            if (flat) {
                // f_s = exp(a_l0 − a_s) Δ_s from the table, D exp(a_l0 − a_l); then the sums so
                // far (left of and on the diagonal) · exp(−a_l0), + C_l · P_c with no factor on
                // the operands, and all · exp(a_l): u_l (left + diagonal) + exp(a_l) C_l · P_c
                diag([&](int m, i64 s, float v) {
                    const i64 d = l0 + m - s;
                    const float r = d >= 0 ? v * kx[s] : 0.0f;
                    return d == 0 ? r + dfrow[m] : r;
                });
                scale_mma_all(acc, exp(-((double)ar + (double)lr)));
                inter(NoFix());
                scale_mma_rows<S>(acc, erow64);
            } else {
                // f_s = exp(a_l − a_s) Δ_s per element, D as it is
                if (kdiag > 0) scale_mma_rows<S>(acc, urow);
                diag([&](int m, i64 s, float v) {
                    const i64 i = l0 + m;
                    const float r = s <= i ? v * f_el(m, s) : 0.0f;
                    return i == s ? r + dh : r;
                });
                inter([&](int m, i64, float v) { return v * erow[m]; });  // exp(a_l) C_l · P_c
            }
        } else {
            if (kdiag > 0) {
                // Left of the diagonal (s < l0 ≤ l): Σ_s CB[l, s] (exp(a_l0 − a_s) Δ_s x_s), then · u_l.
                mma_loop<BM, BN, WM, true, false>(acc, sm, 0, kdiag, cb_at, x_at,
                                                  0x7fffffffffffffffll, 0, NoFix(), x_fix);
                scale_mma_rows<S>(acc, urow);
            }
            // Inter-chunk term: exp(a_l) C_l · P_c (K = n).
            scaled_rows_mma<F, BM, BN, WM>(acc, sm, Cb, ng * nn, l0, len, erow, Pb, p0, np, nn);
            // The rest of the intra-chunk term (K = s ≤ l, per element; causal: a warp's
            // products stop after its last row's s).
            mma_loop<BM, BN, WM, true, false>(acc, sm, kdiag, kend, cb_at, x_at, kcap, 0, cb_fix);
        }
    };
    if (fast) run(BoolC<true>());
    else run(BoolC<false>());
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 ii = l0 + mma_row<S>(mt, r);
            if (ii >= len) continue;
            const i64 rowo = ((b * l + c0 + ii) * nh + h) * np;
#pragma unroll
            for (int nt = 0; nt < S::NTT; ++nt) {
                const i64 p = p0 + mma_col<S>(nt, r);
                if (p >= np) continue;
                float yv = (float)acc[mt][nt][r];
                if (D && !dfast) yv += (d_per_channel ? D[h * np + p] : D[h]) * x[rowo + p];
                if (z) {
                    out[rowo + p] = yv * silu_f(z[rowo + p]);
                    y_out[rowo + p] = yv;
                } else {
                    out[rowo + p] = yv;
                }
            }
        }
}
