// forward.cu — the five forward kernels of the chunked SSD (DESIGN.md §2), f32.
//
// Layouts (row-major): x (b,l,h,p), dt (b,l,h), B/C (b,l,g,n), dt_bhcq/dacs_bhcq (b,h,c,Q),
// states (b,c,h,p,n), cb (b,c,g,Q,Q), seq_idx (b,l) i32. Every block decodes its coordinates
// from blockIdx.x (innermost first), so grids of more than 65535 chunks·heads work.

// chunk_cumsum [_chunk_cumsum_fwd]: Δ and a_l = Σ_{k≤l in chunk} Δ_k A_h, one block per
// (b, h, c), block-parallel inclusive scan over the chunk (in NT-sized segments with a carry).
extern "C" __global__ void __launch_bounds__(NT) chunk_cumsum_kernel(
    const float* __restrict__ dt, const float* __restrict__ A, const float* __restrict__ dt_bias,
    float* __restrict__ dt_out, float* __restrict__ dacs_out, i64 nb, i64 l, i64 nh, i64 q, i64 nc,
    int softplus, float lo, float hi) {
    __shared__ float red[32];
    BlockIdx bi;
    const i64 c = bi.next(nc), h = bi.next(nh), b = bi.rest;
    const float a = A[h];
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    const i64 obase = ((b * nh + h) * nc + c) * q;
    float carry = 0.0f;
    for (i64 base = 0; base < q; base += NT) {
        const i64 i = base + threadIdx.x;
        const i64 t = c * q + i;
        float d = 0.0f;
        if (i < q && t < l) d = process_dt_f(dt[(b * l + t) * nh + h], bias, softplus, lo, hi);
        float total;
        float incl = block_inclusive_scan(d * a, red, total) + carry;
        if (i < q) {
            dt_out[obase + i] = d;
            dacs_out[obase + i] = incl;
        }
        carry += total;
    }
}

// chunk_state [_chunk_state_fwd] (mode 0) and chunk_scan_bwd_dstates (mode 1): per (b, c, h)
//   out[p, n] = Σ_s w_s · X[s, p] · Y[s, n]
// mode 0: X = x, Y = B, w_s = [id_s = id_last] exp(a_last − a_s) Δ_s   → S_c
// mode 1: X = dy, Y = C, w_s = [id_s = id_prev] exp(a_s)                 → dP_c
// Tile 64 (p) × 64 (n), K = the chunk's tokens.
extern "C" __global__ void __launch_bounds__(NT) chunk_state_kernel(
    int mode, const float* __restrict__ Y, const float* __restrict__ X, const float* __restrict__ dt,
    const float* __restrict__ dacs, const int* __restrict__ seq, float* __restrict__ out, i64 nb,
    i64 l, i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    __shared__ GemmSmem<4, 4> sm;
    __shared__ float w[BKK];
    const i64 tn = (nn + 63) / 64, tp = (np + 63) / 64;
    BlockIdx bi;
    const i64 nt = bi.next(tn), pt = bi.next(tp), h = bi.next(nh), c = bi.next(nc), b = bi.rest;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const int ref_id = mode == 0 ? chunk_end_id(seq, l, q, b, c) : prev_end_id(seq, l, q, b, c);
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    const float a_last = dac[q - 1];
    const i64 p0 = pt * 64, n0 = nt * 64;
    const float* Xb = X + ((b * l + c0) * nh + h) * np;
    const float* Yb = Y + ((b * l + c0) * ng + g) * nn;
    float acc[4][4];
    zero_acc(acc);
    for (i64 k0 = 0; k0 < len; k0 += BKK) {
        if (threadIdx.x < BKK) {
            const i64 s = k0 + threadIdx.x;
            float v = 0.0f;
            if (s < len && seq_at(seq, l, b, c0 + s) == ref_id)
                v = mode == 0 ? expf(a_last - dac[s]) * dtc[s] : expf(dac[s]);
            w[threadIdx.x] = v;
        }
        __syncthreads();
        gemm_step<4, 4, false, false>(
            acc, sm, k0,
            [&](int m, int kk, i64 s) -> float {
                const i64 p = p0 + m;
                return (s < len && p < np) ? Xb[s * nh * np + p] * w[kk] : 0.0f;
            },
            [&](int kk, int n, i64 s) -> float {
                const i64 ni = n0 + n;
                return (s < len && ni < nn) ? Yb[s * ng * nn + ni] : 0.0f;
            });
    }
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    float* ob = out + ((b * nc + c) * nh + h) * np * nn;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const i64 p = p0 + ty * 4 + i;
        if (p >= np) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 ni = n0 + tx * 4 + j;
            if (ni < nn) ob[p * nn + ni] = acc[i][j];
        }
    }
}

// state_passing [_state_passing_fwd]: one thread per (b, h, p·n) element, sequential over chunks:
// P_c = H_{c−1}; H_c = [id_end(c) = id_end(c−1)] exp(a_last,c) H_{c−1} + S_c.
extern "C" __global__ void __launch_bounds__(NT) state_passing_kernel(
    const float* __restrict__ states, const float* __restrict__ dacs, const float* __restrict__ init,
    const int* __restrict__ seq, float* __restrict__ prev, float* __restrict__ fin, i64 nb, i64 l,
    i64 nh, i64 pn, i64 q, i64 nc) {
    const i64 nblk = (pn + NT - 1) / NT;
    BlockIdx bi;
    const i64 eb = bi.next(nblk), h = bi.next(nh), b = bi.rest;
    const i64 e = eb * NT + threadIdx.x;
    if (e >= pn) return;
    float H = init ? init[(b * nh + h) * pn + e] : 0.0f;
    for (i64 c = 0; c < nc; ++c) {
        const i64 o = ((b * nc + c) * nh + h) * pn + e;
        prev[o] = H;
        const bool same = chunk_end_id(seq, l, q, b, c) == prev_end_id(seq, l, q, b, c);
        const float decay = same ? expf(dacs[((b * nh + h) * nc + c) * q + q - 1]) : 0.0f;
        H = decay * H + states[o];
    }
    fin[(b * nh + h) * pn + e] = H;
}

// bmm_chunk [_bmm_chunk_fwd]: CB[i, j] = C_i · B_j per (b, c, g); 0 across ids and at padding.
// Tile 64 × 64, K = n. With `causal`, tiles strictly above the diagonal are skipped (left
// unwritten: the combined op never reads them).
extern "C" __global__ void __launch_bounds__(NT) bmm_chunk_kernel(
    const float* __restrict__ C, const float* __restrict__ B, const int* __restrict__ seq,
    float* __restrict__ cb, i64 nb, i64 l, i64 ng, i64 nn, i64 q, i64 nc, int causal) {
    __shared__ GemmSmem<4, 4> sm;
    const i64 tq = (q + 63) / 64;
    BlockIdx bi;
    const i64 jt = bi.next(tq), it = bi.next(tq), g = bi.next(ng), c = bi.next(nc), b = bi.rest;
    if (causal && jt > it) return;
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 i0 = it * 64, j0 = jt * 64;
    const float* Cb = C + ((b * l + c0) * ng + g) * nn;
    const float* Bb = B + ((b * l + c0) * ng + g) * nn;
    float acc[4][4];
    zero_acc(acc);
    for (i64 k0 = 0; k0 < nn; k0 += BKK) {
        gemm_step<4, 4, true, true>(
            acc, sm, k0,
            [&](int m, int kk, i64 k) -> float {
                const i64 i = i0 + m;
                return (i < len && k < nn) ? Cb[i * ng * nn + k] : 0.0f;
            },
            [&](int kk, int n, i64 k) -> float {
                const i64 j = j0 + n;
                return (j < len && k < nn) ? Bb[j * ng * nn + k] : 0.0f;
            });
    }
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    float* ob = cb + ((b * nc + c) * ng + g) * q * q;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const i64 ii = i0 + ty * 4 + i;
        if (ii >= q) continue;
        const int idi = ii < len ? seq_at(seq, l, b, c0 + ii) : 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 jj = j0 + tx * 4 + j;
            if (jj >= q) continue;
            float v = 0.0f;
            if (ii < len && jj < len && idi == seq_at(seq, l, b, c0 + jj)) v = acc[i][j];
            ob[ii * q + jj] = v;
        }
    }
}

// chunk_scan [_chunk_scan_fwd]: per (b, c, h), rows l of a 64-row tile, columns p of a 64 tile:
//   y_l = [id_l = id_prev] exp(a_l) C_l · P_c + Σ_{s≤l} CB[l, s] exp(a_l − a_s) Δ_s x_s + D x_l
//   out = y ⊙ silu(z) when z (and y is stored as well).
extern "C" __global__ void __launch_bounds__(NT) chunk_scan_kernel(
    const float* __restrict__ cb, const float* __restrict__ x, const float* __restrict__ dt,
    const float* __restrict__ dacs, const float* __restrict__ C, const float* __restrict__ P,
    const float* __restrict__ D, int d_per_channel, const float* __restrict__ z,
    const int* __restrict__ seq, float* __restrict__ out, float* __restrict__ y_out, i64 nb, i64 l,
    i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    __shared__ GemmSmem<4, 4> sm;
    __shared__ float dl[64], erow[64], ds[BKK], dts[BKK];
    const i64 tl = (q + 63) / 64, tp = (np + 63) / 64;
    BlockIdx bi;
    const i64 pt = bi.next(tp), lt = bi.next(tl), h = bi.next(nh), c = bi.next(nc), b = bi.rest;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 l0 = lt * 64, p0 = pt * 64;
    if (l0 >= len) return;  // padded rows produce no output
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    const int pid = prev_end_id(seq, l, q, b, c);
    if (threadIdx.x < 64) {
        const i64 i = l0 + threadIdx.x;
        float a = 0.0f, e = 0.0f;
        if (i < len) {
            a = dac[i];
            if (seq_at(seq, l, b, c0 + i) == pid) e = expf(a);
        }
        dl[threadIdx.x] = a;
        erow[threadIdx.x] = e;
    }
    __syncthreads();
    const float* cbb = cb + ((b * nc + c) * ng + g) * q * q;
    const float* xb = x + ((b * l + c0) * nh + h) * np;
    const float* Cb = C + ((b * l + c0) * ng + g) * nn;
    const float* Pb = P + ((b * nc + c) * nh + h) * np * nn;
    float acc[4][4];
    zero_acc(acc);
    // Inter-chunk term: exp(a_l) C_l · P_c (K = n).
    for (i64 k0 = 0; k0 < nn; k0 += BKK) {
        gemm_step<4, 4, true, true>(
            acc, sm, k0,
            [&](int m, int kk, i64 k) -> float {
                const i64 i = l0 + m;
                return (i < len && k < nn) ? Cb[i * ng * nn + k] * erow[m] : 0.0f;
            },
            [&](int kk, int n, i64 k) -> float {
                const i64 p = p0 + n;
                return (k < nn && p < np) ? Pb[p * nn + k] : 0.0f;
            });
    }
    // Intra-chunk term (K = s ≤ l, causal).
    const i64 kend = min(len, l0 + 64);
    for (i64 k0 = 0; k0 < kend; k0 += BKK) {
        if (threadIdx.x < BKK) {
            const i64 s = k0 + threadIdx.x;
            ds[threadIdx.x] = s < len ? dac[s] : 0.0f;
            dts[threadIdx.x] = s < len ? dtc[s] : 0.0f;
        }
        __syncthreads();
        gemm_step<4, 4, true, false>(
            acc, sm, k0,
            [&](int m, int kk, i64 s) -> float {
                const i64 i = l0 + m;
                return (i < len && s <= i) ? cbb[i * q + s] * expf(dl[m] - ds[kk]) * dts[kk] : 0.0f;
            },
            [&](int kk, int n, i64 s) -> float {
                const i64 p = p0 + n;
                return (s < len && p < np) ? xb[s * nh * np + p] : 0.0f;
            });
    }
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const i64 ii = l0 + ty * 4 + i;
        if (ii >= len) continue;
        const i64 rowo = ((b * l + c0 + ii) * nh + h) * np;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 p = p0 + tx * 4 + j;
            if (p >= np) continue;
            float yv = acc[i][j];
            if (D) yv += (d_per_channel ? D[h * np + p] : D[h]) * x[rowo + p];
            if (z) {
                out[rowo + p] = yv * silu_f(z[rowo + p]);
                y_out[rowo + p] = yv;
            } else {
                out[rowo + p] = yv;
            }
        }
    }
}
