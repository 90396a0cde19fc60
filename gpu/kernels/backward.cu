// backward.cu — the backward kernels of the chunked SSD (docs/design.md §2.6), f32,
// deterministic.
//
// Reductions that cross blocks (dD, the per-head A adjoints, dA, ddt_bias, ddA_chunk) are
// written as per-block partials and summed by a second kernel in a fixed order.

// chunk_scan_bwd_dz: one thread per column (h, p) of a run of `rows_per` rows (b·l):
// dy = dout ⊙ silu(z) (dout without z), dz = dout ⊙ y ⊙ σ(z)(1 + z(1 − σ(z))),
// dD partial = Σ_rows dy ⊙ x  → part[row_chunk, h·p]. `dy` null: not stored (without z the
// combined backward uses dout itself).
extern "C" __global__ void __launch_bounds__(NT) bwd_dz_kernel(
    const float* __restrict__ dout, const float* __restrict__ x, const float* __restrict__ y,
    const float* __restrict__ z, float* __restrict__ dy, float* __restrict__ dz,
    float* __restrict__ dd_part, i64 rows, i64 hp, i64 rows_per) {
    const i64 ncb = (hp + NT - 1) / NT;
    BlockIdx bi;
    const i64 cbk = bi.next(ncb), rc = bi.rest;
    const i64 j = cbk * NT + threadIdx.x;
    if (j >= hp) return;
    const i64 r0 = rc * rows_per;
    const i64 r1 = min(rows, r0 + rows_per);
    float acc = 0.0f;
    for (i64 r = r0; r < r1; ++r) {
        const i64 o = r * hp + j;
        const float g = dout[o];
        float dyv = g;
        if (z) {
            const float zv = z[o];
            const float sg = sigmoid_f(zv);
            dyv = g * (zv * sg);
            dz[o] = g * y[o] * (sg * (1.0f + zv * (1.0f - sg)));
        }
        if (dy) dy[o] = dyv;
        if (dd_part) acc = fmaf(dyv, x[o], acc);
    }
    if (dd_part) dd_part[rc * hp + j] = acc;
}

// Sums `nparts` partial rows of length `len` in order: out[j] = Σ_r part[r, j]; with
// `group` > 1 additionally out[j / group] sums `group` consecutive columns (dD of shape (h)).
extern "C" __global__ void __launch_bounds__(NT) sum_rows_kernel(
    const float* __restrict__ part, float* __restrict__ out, i64 nparts, i64 len, i64 group) {
    const i64 jo = (i64)blockIdx.x * NT + threadIdx.x;
    if (jo * group >= len) return;
    float acc = 0.0f;
    for (i64 jj = 0; jj < group; ++jj) {
        const i64 j = jo * group + jj;
        float s = 0.0f;
        for (i64 r = 0; r < nparts; ++r) s += part[r * len + j];
        acc += s;
    }
    out[jo] = acc;
}

// state_passing_bwd: per (b, h) and slice of p·n (EPT elements per thread), reverse over chunks:
// dS_c = G_c; G_{c−1} = dP_c + decay_c G_c; dinit = G_{−1};
// ddA_chunk partial = ⟨P_c, G_c⟩ over the slice → part[(b, h, c), slice].
#define SP_EPT 8
extern "C" __global__ void __launch_bounds__(NT) state_passing_bwd_kernel(
    const float* __restrict__ prev, const float* __restrict__ dacs, const float* __restrict__ dlo,
    const float* __restrict__ dprev, const float* __restrict__ dfinal, const int* __restrict__ seq, float* __restrict__ dstates,
    float* __restrict__ dinit, float* __restrict__ part, i64 nb, i64 l, i64 nh, i64 pn, i64 q,
    i64 nc, i64 nsplit) {
    __shared__ float red[32];
    BlockIdx bi;
    const i64 sp = bi.next(nsplit), h = bi.next(nh), b = bi.rest;
    const i64 ebase = sp * (NT * SP_EPT);
    float G[SP_EPT];
#pragma unroll
    for (int k = 0; k < SP_EPT; ++k) {
        const i64 e = ebase + k * NT + threadIdx.x;
        G[k] = (dfinal && e < pn) ? dfinal[(b * nh + h) * pn + e] : 0.0f;
    }
    for (i64 c = nc - 1; c >= 0; --c) {
        const bool same = chunk_end_id(seq, l, q, b, c) == prev_end_id(seq, l, q, b, c);
        const i64 il = ((b * nh + h) * nc + c) * q + q - 1;
        const float decay = same ? exp_hl(dacs[il], lo_at(dlo, il)) : 0.0f;
        const i64 ob = ((b * nc + c) * nh + h) * pn;
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < SP_EPT; ++k) {
            const i64 e = ebase + k * NT + threadIdx.x;
            if (e < pn) {
                dstates[ob + e] = G[k];
                dot = fmaf(prev[ob + e], G[k], dot);
                G[k] = dprev[ob + e] + decay * G[k];
            }
        }
        dot = block_sum(dot, red);
        if (threadIdx.x == 0) part[((b * nh + h) * nc + c) * nsplit + sp] = dot;
    }
#pragma unroll
    for (int k = 0; k < SP_EPT; ++k) {
        const i64 e = ebase + k * NT + threadIdx.x;
        if (e < pn) dinit[(b * nh + h) * pn + e] = G[k];
    }
}

// ddA_chunk[b, h, c] = [same] exp(a_last,c) Σ_slices part.
extern "C" __global__ void __launch_bounds__(NT) state_passing_bwd_reduce_kernel(
    const float* __restrict__ part, const float* __restrict__ dacs, const float* __restrict__ dlo,
    const int* __restrict__ seq, float* __restrict__ ddA_chunk, i64 nb, i64 l, i64 nh, i64 q, i64 nc, i64 nsplit) {
    const i64 idx = (i64)blockIdx.x * NT + threadIdx.x;
    if (idx >= nb * nh * nc) return;
    const i64 c = idx % nc, b = idx / (nc * nh);
    float s = 0.0f;
    for (i64 k = 0; k < nsplit; ++k) s += part[idx * nsplit + k];
    const bool same = chunk_end_id(seq, l, q, b, c) == prev_end_id(seq, l, q, b, c);
    // The product in double, rounded once: under strong decay exp(a_last) is below f32's normal
    // range (e^-95 ≈ 5e-42) and an f32 exp followed by an f32 product rounds twice among the
    // subnormals, off by up to a third of the value (seen on a drawn case).
    const i64 il = idx * q + q - 1;
    const double e = exp((double)dacs[il]) * (1.0 + (double)lo_at(dlo, il));
    ddA_chunk[idx] = same ? (float)(e * (double)s) : 0.0f;
}

// chunk_scan_chunk_state_bwd_dx: per (b, c, h) and 64-row tile of tokens s (f64 tensor-core
// products, mma_loop; 8 warps of 16 × 32), all p tiles in turn:
//   bracket[s, p] = e_s Σ_n B[s, n] dS[p, n] + Σ_{l≥s} CB[l, s] exp(a_l − a_s) dy[l, p]
//   (e_s = [id_s = id_last] exp(a_last − a_s)); dx = Δ_s bracket + D dy;
//   ddt_direct_s = Σ_p bracket[s, p] x[s, p] (per p tile: each lane's 8 columns of the row, then
//   the 4 lanes of its quad by shuffles, into one shared slot per warp column; the p tiles' sums
//   added in order there and the slots in order at the end, so no dot stays in registers across
//   the products, where registers are short).
// Whole aligned tiles without seq_idx take the fast loader form (as chunk_scan_kernel).
extern "C" __global__ void __launch_bounds__(NT, 3) bwd_dx_kernel(
    const float* __restrict__ x, const float* __restrict__ dt, const float* __restrict__ dacs,
    const float* __restrict__ dlo, const float* __restrict__ B, const float* __restrict__ cb,
    const float* __restrict__ dy,
    const float* __restrict__ dS, const float* __restrict__ D, int d_per_channel,
    const int* __restrict__ seq, float* __restrict__ dx, float* __restrict__ ddt_direct, i64 nb,
    i64 l, i64 nh, i64 np, i64 ng, i64 nn, i64 q, i64 nc) {
    constexpr int BM = 64, BN = 64, WM = 4;
    using S = MmaShape<BM, BN, WM>;
    __shared__ MmaSmem<BM, BN> sm;
    __shared__ float dsr[BM], dsl[BM], erow[BM], dtr[BM], rsum[S::WN][BM];
    __shared__ float ka[QS], kal[QS];  // a and its lo part of the chunk's first QS positions
    const i64 ts = (q + BM - 1) / BM;
    BlockIdx bi;
    const i64 st = bi.next(ts), h = bi.next(nh), c = bi.next(nc), b = bi.rest;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 s0 = st * BM;
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    if (s0 >= len) {
        // padded rows: ddt_direct is 0 there
        if (threadIdx.x < BM && s0 + threadIdx.x < q)
            ddt_direct[((b * nh + h) * nc + c) * q + s0 + threadIdx.x] = 0.0f;
        return;
    }
    const int lid = chunk_end_id(seq, l, q, b, c);
    const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
    const float a_last = dac[q - 1], lo_last = lo_at(dlc, q - 1);
    if (threadIdx.x < BM) {
        const i64 s = s0 + threadIdx.x;
        float a = 0.0f, al = 0.0f, e = 0.0f, d = 0.0f;
        if (s < len) {
            a = dac[s];
            al = lo_at(dlc, s);
            d = dtc[s];
            if (seq_at(seq, l, b, c0 + s) == lid) e = exp_seg(a_last, lo_last, a, al);
        }
        dsr[threadIdx.x] = a;
        dsl[threadIdx.x] = al;
        erow[threadIdx.x] = e;
        dtr[threadIdx.x] = d;
#pragma unroll
        for (int w = 0; w < S::WN; ++w) rsum[w][threadIdx.x] = 0.0f;
    }
    for (i64 li = s0 + threadIdx.x; li < min(len, (i64)QS); li += NT) {
        ka[li] = dac[li];
        kal[li] = lo_at(dlc, li);
    }
    __syncthreads();
    const float* cbb = cb + ((b * nc + c) * ng + g) * q * q;
    const float* Bb = B + ((b * l + c0) * ng + g) * nn;
    const float* dSb = dS + ((b * nc + c) * nh + h) * np * nn;
    const float* dyb = dy + ((b * l + c0) * nh + h) * np;
    const float* xb = x + ((b * l + c0) * nh + h) * np;
    // (q a multiple of BKK: the loaders of the last step read rows up to its end)
    const bool fast = len == q && q % BKK == 0 && q <= QS && s0 + BM <= q && !seq && np % BN == 0 &&
                      nn % BKK == 0 && aligned16(cb) && aligned16(B) && aligned16(dS) &&
                      aligned16(dy);
    const i64 tp = (np + BN - 1) / BN;
    // CB[l, s] is read for l ≥ s only (the combined op leaves the rest unwritten)
    for (i64 pt = 0; pt < tp; ++pt) {
        const i64 p0 = pt * BN;
        double acc[S::MT][S::NTT][4];
        zero_mma(acc);
        auto run = [&](auto fast_form) {
            constexpr bool F = decltype(fast_form)::value;
            auto la_ = [&](i64 li) { return F || li < QS ? ka[li] : dac[li]; };
            auto ll_ = [&](i64 li) { return F || li < QS ? kal[li] : lo_at(dlc, li); };
            auto cb_fix = [&](int m, i64 li, float4 v) {  // · exp(a_l − a_s), 0 for s > l
                if (!F && li >= len) return f4_zero();
                const i64 s = s0 + m;
                const float a = la_(li), al = ll_(li);
                v.x = s <= li ? v.x * exp_seg(a, al, dsr[m], dsl[m]) : 0.0f;
                v.y = s + 1 <= li ? v.y * exp_seg(a, al, dsr[m + 1], dsl[m + 1]) : 0.0f;
                v.z = s + 2 <= li ? v.z * exp_seg(a, al, dsr[m + 2], dsl[m + 2]) : 0.0f;
                v.w = s + 3 <= li ? v.w * exp_seg(a, al, dsr[m + 3], dsl[m + 3]) : 0.0f;
                return v;
            };
            const i64 kfloor = s0 + S::warp_m0();  // causal: a warp's first row's s
            // e_s B_s · dS (K = n)
            scaled_rows_mma<F, BM, BN, WM>(acc, sm, Bb, ng * nn, s0, len, erow, dSb, p0, np, nn);
            // Σ_l CB[l, s] exp(a_l − a_s) dy_l (the factor by the fix-up, a step after the load;
            // an asynchronous-copy form, as chunk_scan's, measured slower here: 1.89 ms against
            // 1.77 at G2 on the H100)
            mma_loop<BM, BN, WM, false, false>(
                acc, sm, s0, len,
                [&](int m, i64 li) -> float4 {  // CB[l, s .. + 4) (0 past row l)
                    if (F) return ld4_fast(cbb + li * q + s0 + m);
                    return li < len ? ld4(cbb + li * q, s0 + m, li + 1) : f4_zero();
                },
                [&](int n, i64 li) -> float4 {  // dy[l, p .. + 4)
                    if (F) return ld4_fast(dyb + li * nh * np + p0 + n);
                    return li < len ? ld4(dyb + li * nh * np, p0 + n, np) : f4_zero();
                },
                0x7fffffffffffffffll, kfloor, cb_fix);
        };
        if (fast) run(BoolC<true>());
        else run(BoolC<false>());
        const int wn = (threadIdx.x >> 5) / WM;
#pragma unroll
        for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // rows g and g + 8 of the mma tile
                const int rr = mma_row<S>(mt, 2 * half);
                const i64 s = s0 + rr;
                float dot = 0.0f;
                if (s < len) {
#pragma unroll
                    for (int nt = 0; nt < S::NTT; ++nt)
#pragma unroll
                        for (int cc = 0; cc < 2; ++cc) {
                            const i64 p = p0 + mma_col<S>(nt, cc);
                            if (p >= np) continue;
                            const i64 o = s * nh * np + p;
                            const float br = (float)acc[mt][nt][2 * half + cc];
                            dot = fmaf(br, xb[o], dot);
                            float v = dtr[rr] * br;
                            if (D) v += (d_per_channel ? D[h * np + p] : D[h]) * dyb[o];
                            dx[((b * l + c0) * nh + h) * np + o] = v;
                        }
                }
                dot = quad_sum(dot);
                if ((threadIdx.x & 3) == 0) rsum[wn][rr] += dot;  // this quad's slot alone
            }
    }
    __syncthreads();
    if (threadIdx.x < BM) {
        const i64 s = s0 + threadIdx.x;
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < S::WN; ++w) v += rsum[w][threadIdx.x];
        if (s < q) ddt_direct[((b * nh + h) * nc + c) * q + s] = s < len ? v : 0.0f;
    }
}

// chunk_state_bwd_db (mode 0) and chunk_scan_bwd_dc (mode 1): per (b, c, g), 64-row × 64-col
// tile of (token, n), heads of the group in turn (G_h by f64 tensor-core products, mma_loop):
//   G_h[r, n] = Σ_p X_h[r, p] M_h[p, n];  out[r, n] = Σ_h w_h[r] G_h[r, n]
//   part[(b, h, c), n-tile, r] = w_h[r] Σ_{n in tile} Y[r, n] G_h[r, n]
// mode 0: X = x, M = dS, Y = B, w = [id = id_last] Δ exp(a_last − a)   (U → ddA_next)
// mode 1: X = dy, M = P, Y = C, w = [id = id_prev] exp(a)               (V = ddacs_prev)
// `accumulate`: out += instead of out =.
extern "C" __global__ void __launch_bounds__(NT, 3) bwd_dbc_kernel(
    int mode, const float* __restrict__ X, const float* __restrict__ M, const float* __restrict__ Y,
    const float* __restrict__ dt, const float* __restrict__ dacs, const float* __restrict__ dlo,
    const int* __restrict__ seq, float* __restrict__ out, float* __restrict__ part, int accumulate, i64 nb, i64 l, i64 nh, i64 np,
    i64 ng, i64 nn, i64 q, i64 nc) {
    constexpr int BM = 64, BN = 64, WM = 4;
    using S = MmaShape<BM, BN, WM>;
    __shared__ union {
        MmaSmem<BM, BN> g;                  // the general form's tiles
        AsyncSmem<BM, BN, true, false> xm;  // the fast form's
    } smu;
    auto& sm = smu.g;
    __shared__ __align__(16) float ys[64][68];
    __shared__ float wr[2][64], prt[S::WN][64];
    const i64 tr = (q + 63) / 64, tn = (nn + 63) / 64;
    BlockIdx bi;
    const i64 nt = bi.next(tn), rt = bi.next(tr), g = bi.next(ng), c = bi.next(nc), b = bi.rest;
    const i64 hpg = nh / ng;
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 r0 = rt * 64, n0 = nt * 64;
    const int wn = (threadIdx.x >> 5) / WM;
    if (r0 >= len) {
        // rows past the sequence: only the partials need zeros
        for (i64 hh = 0; hh < hpg; ++hh) {
            const i64 h = g * hpg + hh;
            const i64 r = r0 + threadIdx.x;
            if (threadIdx.x < 64 && r < q) part[(((b * nh + h) * nc + c) * tn + nt) * q + r] = 0.0f;
        }
        return;
    }
    const int ref_id = mode == 0 ? chunk_end_id(seq, l, q, b, c) : prev_end_id(seq, l, q, b, c);
    const bool fast = r0 + 64 <= len && np > 0 && np % 4 == 0 && nn % 4 == 0 && n0 + 64 <= nn &&
                      aligned16(X) && aligned16(M);
    const float* Yb = Y + ((b * l + c0) * ng + g) * nn;
    for (int e = threadIdx.x; e < 64 * 64; e += NT) {
        const int r = e / 64, n = e % 64;
        const i64 rr = r0 + r, ni = n0 + n;
        ys[r][n] = (rr < len && ni < nn) ? Yb[rr * ng * nn + ni] : 0.0f;
    }
    float oacc[S::MT][S::NTT][4];  // Σ_h w_h G_h, in the mma layout
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
        for (int j = 0; j < S::NTT; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) oacc[mt][j][r] = 0.0f;
    auto w_fill = [&](i64 hh, float* w) {  // w_h[r] of head hh into w (threads 0 .. 63)
        const i64 h = g * hpg + hh;
        const float* dtc = dt + ((b * nh + h) * nc + c) * q;
        const float* dac = dacs + ((b * nh + h) * nc + c) * q;
        const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
        if (threadIdx.x < 64) {
            const i64 r = r0 + threadIdx.x;
            float v = 0.0f;
            if (r < len && seq_at(seq, l, b, c0 + r) == ref_id)
                v = mode == 0 ? dtc[r] * exp_seg(dac[q - 1], lo_at(dlc, q - 1), dac[r], lo_at(dlc, r))
                              : exp_hl(dac[r], lo_at(dlc, r));
            w[threadIdx.x] = v;
        }
    };
    double acc[S::MT][S::NTT][4];
    zero_mma(acc);
    // Head hh's G_h is complete in acc: fold it into out and its partials (w: its w_h, written
    // before a barrier), then zero acc for the next head.
    auto head_end = [&](i64 hh, const float* w) {
        const i64 h = g * hpg + hh;
#pragma unroll
        for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // rows g and g + 8 of the mma tile
                const int rr = mma_row<S>(mt, 2 * half);
                const float wv = w[rr];
                float sum = 0.0f;
#pragma unroll
                for (int j = 0; j < S::NTT; ++j)
#pragma unroll
                    for (int cc = 0; cc < 2; ++cc) {
                        const float gv = (float)acc[mt][j][2 * half + cc];
                        oacc[mt][j][2 * half + cc] = fmaf(wv, gv, oacc[mt][j][2 * half + cc]);
                        sum = fmaf(ys[rr][mma_col<S>(j, cc)], gv, sum);
                    }
                sum = quad_sum(sum);
                if ((threadIdx.x & 3) == 0) prt[wn][rr] = sum;
            }
        __syncthreads();
        if (threadIdx.x < 64) {
            const i64 rr = r0 + threadIdx.x;
            float sum = 0.0f;
#pragma unroll
            for (int v = 0; v < S::WN; ++v) sum += prt[v][threadIdx.x];
            if (rr < q) part[(((b * nh + h) * nc + c) * tn + nt) * q + rr] = rr < len ? w[threadIdx.x] * sum : 0.0f;
        }
        __syncthreads();  // prt and w are rewritten for the next head
        zero_mma(acc);
    };
    if (fast) {
        // whole aligned tiles: asynchronous copies, every head's product back to back, and w of
        // the next head filled while this one's is read
        w_fill(0, wr[0]);  // (read after the loop's first barrier)
        mma_async_segments<BM, BN, WM, true, false, NT>(
            acc, smu.xm, hpg, 0, np,
            [&](i64 hh, int m, i64 k) {
                return X + ((b * l + c0 + r0 + m) * nh + g * hpg + hh) * np + k;
            },
            [&](i64 hh, int n, i64 k) {
                return M + (((b * nc + c) * nh + g * hpg + hh) * np + k) * nn + n0 + n;
            },
            0x7fffffffffffffffll, 0, NoFix(), NoFix(), [&](i64 hh) {
                if (hh + 1 < hpg) w_fill(hh + 1, wr[(hh + 1) & 1]);
                head_end(hh, wr[hh & 1]);
            });
    } else {
        for (i64 hh = 0; hh < hpg; ++hh) {
            const i64 h = g * hpg + hh;
            w_fill(hh, wr[0]);  // (read after mma_loop's barriers)
            const float* Xb = X + ((b * l + c0) * nh + h) * np;
            const float* Mb = M + ((b * nc + c) * nh + h) * np * nn;
            mma_loop<BM, BN, WM, true, false>(
                acc, sm, 0, np,
                [&](int m, i64 k) -> float4 {  // X[r, k .. + 4)
                    const i64 r = r0 + m;
                    return r < len ? ld4(Xb + r * nh * np, k, np) : f4_zero();
                },
                [&](int n, i64 k) -> float4 {  // M[k, n .. + 4)
                    return k < np ? ld4(Mb + k * nn, n0 + n, nn) : f4_zero();
                });
            if (np == 0) __syncthreads();
            head_end(hh, wr[0]);
        }
    }
    float* ob = out + ((b * l + c0) * ng + g) * nn;
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 rr = r0 + mma_row<S>(mt, r);
            if (rr >= len) continue;
#pragma unroll
            for (int j = 0; j < S::NTT; ++j) {
                const i64 ni = n0 + mma_col<S>(j, r);
                if (ni >= nn) continue;
                const i64 o = rr * ng * nn + ni;
                ob[o] = accumulate ? ob[o] + oacc[mt][j][r] : oacc[mt][j][r];
            }
        }
}

// Per (b, h, c): v_k = Σ_parts part[(b,h,c), part, k] (fixed order), then
// mode 0: out = v; mode 1: out_k = Σ_{s<k} v_s (exclusive prefix, ddA_next);
// mode 2: out_k = Σ_{s≥k} v_s (reverse inclusive cumsum). Positions past the sequence are 0.
// The exclusive prefix is the inclusive scan of the sequence shifted by one (thread k holds
// v_{k−1}), never `inclusive − v_k`: under strong decay U_k = Δ_k exp(a_last − a_k)⟨…⟩ grows by
// e^{Δ|A|} per step, so v_k can exceed Σ_{s<k} v_s by 10⁸ and the difference keeps nothing of it.
extern "C" __global__ void __launch_bounds__(NT) reduce_parts_kernel(
    const float* __restrict__ part, float* __restrict__ out, i64 nparts, i64 q, int mode, i64 l,
    i64 nc) {
    __shared__ float red[32];
    const i64 bhc = blockIdx.x;
    const i64 len = min(q, l - (bhc % nc) * q);  // padded positions stay 0
    const float* pb = part + bhc * nparts * q;
    float* ob = out + bhc * q;
    float carry = 0.0f;
    const i64 nseg = (q + NT - 1) / NT;
    for (i64 sg = 0; sg < nseg; ++sg) {
        // mode 2 walks segments from the end and indexes them in reverse
        const i64 k = mode == 2 ? q - 1 - (sg * NT + threadIdx.x) : sg * NT + threadIdx.x;
        const bool valid = mode == 2 ? (sg * NT + threadIdx.x) < q : k < q;
        // the element this thread scans: v_k, or v_{k−1} for the exclusive prefix
        const i64 src = mode == 1 ? k - 1 : k;
        float v = 0.0f;
        if (valid && src >= 0)
            for (i64 pp = 0; pp < nparts; ++pp) v += pb[pp * q + src];
        if (mode == 0) {
            if (valid) ob[k] = v;
            continue;
        }
        float total;
        const float incl = block_inclusive_scan(v, red, total);
        if (valid) ob[k] = k < len ? carry + incl : 0.0f;
        carry += total;
    }
}

// P = dy_L x_Sᵀ over K = p for a 64 × 64 (l, s) tile (4 × 4 per thread): rows l0 + m and
// s0 + n of dy and x (row stride rs, zero from len on). dcb, ddacs_stable and their one pass.
__device__ __forceinline__ void dy_x_product(float (&acc)[4][4], GemmSmem<4, 4>& sm,
                                             const float* dyb, const float* xb, i64 l0, i64 s0,
                                             i64 len, i64 rs, i64 np) {
    gemm_loop<4, 4, true, true>(
        acc, sm, 0, np,
        [&](int m, i64 k) -> float4 {  // dy[l, k .. + 4)
            const i64 li = l0 + m;
            return li < len ? ld4(dyb + li * rs, k, np) : f4_zero();
        },
        [&](int n, i64 k) -> float4 {  // x[s, k .. + 4)
            const i64 si = s0 + n;
            return si < len ? ld4(xb + si * rs, k, np) : f4_zero();
        });
}

// Stores (or with `add` adds) a thread's 4 × 4 outputs of the 64 × 64 tile (l0, s0) of a q × q
// matrix (inside it).
__device__ __forceinline__ void store_qq_tile(float* ob, const float (&oacc)[4][4], i64 l0, i64 s0,
                                              i64 q, bool add) {
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const i64 li = l0 + ty * 4 + i;
        if (li >= q) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 si = s0 + tx * 4 + j;
            if (si < q) ob[li * q + si] = add ? ob[li * q + si] + oacc[i][j] : oacc[i][j];
        }
    }
}

// The ddacs_stable sums of one (l tile L, s tile S) pair from W in Ws (rows l, columns s; zero
// where s ≥ l or past the chunk): row prefixes, carried across the S tiles of L in carry[64],
// then part[k] = Σ_{l ∈ L, l ≥ k} Σ_{s < k} W[l, s] for k = s0 + j + 1 ≤ kmax — sums of
// products, never differences. Synchronises (before and after).
__device__ __forceinline__ void ddacs_tile_sums(float (&Ws)[64][65], float* carry, float* pb,
                                                i64 l0, i64 s0, i64 kmax) {
    __syncthreads();
    // row prefix: 4 threads per row, 16 columns each, then a 4-lane scan (fixed order)
    {
        const int r = threadIdx.x >> 2, seg = threadIdx.x & 3;
        float run = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            run += Ws[r][seg * 16 + j];
            Ws[r][seg * 16 + j] = run;
        }
        // exclusive offsets of the 4 segments of the row
        float t1 = __shfl_up_sync(0xffffffffu, run, 1, 4);
        float t2 = __shfl_up_sync(0xffffffffu, run, 2, 4);
        float t3 = __shfl_up_sync(0xffffffffu, run, 3, 4);
        float off = carry[r];
        if (seg >= 1) off += t1;
        if (seg >= 2) off += t2;
        if (seg >= 3) off += t3;
        // note: off = carry + Σ of earlier segments (added left to right from the nearest)
#pragma unroll
        for (int j = 0; j < 16; ++j) Ws[r][seg * 16 + j] += off;
        __syncthreads();
        if (seg == 3) carry[r] = Ws[r][63];
    }
    __syncthreads();
    // column sums over rows l ≥ k, k = s0 + j + 1: 4 threads per column, 16 rows each
    {
        const int j = threadIdx.x >> 2, seg = threadIdx.x & 3;
        const i64 k = s0 + j + 1;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            const int r = seg * 16 + i;
            if (l0 + r >= k) s += Ws[r][j];
        }
        s += __shfl_xor_sync(0xffffffffu, s, 1, 4);
        s += __shfl_xor_sync(0xffffffffu, s, 2, 4);
        if (seg == 0 && k <= kmax) pb[k] = s;
    }
    __syncthreads();
}

// chunk_scan_bwd_dcb: per (b, c, g), 64 × 64 tile (l, s):
//   dCB[l, s] = Σ_{h in g} Σ_p dy[l, p] x[s, p] Δ_s exp(a_l − a_s)  for s ≤ l, else 0.
extern "C" __global__ void __launch_bounds__(NT, 2) bwd_dcb_kernel(
    const float* __restrict__ x, const float* __restrict__ dt, const float* __restrict__ dacs,
    const float* __restrict__ dlo, const float* __restrict__ dy, float* __restrict__ dcb, i64 nb, i64 l, i64 nh, i64 np, i64 ng,
    i64 q, i64 nc) {
    __shared__ GemmSmem<4, 4> sm;
    __shared__ float dlr[64], dsc[64], dlrl[64], dscl[64], dtc_s[64];
    const i64 tq = (q + 63) / 64;
    BlockIdx bi;
    const i64 st = bi.next(tq), lt = bi.next(tq), g = bi.next(ng), c = bi.next(nc), b = bi.rest;
    const i64 hpg = nh / ng;
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 l0 = lt * 64, s0 = st * 64;
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    float* ob = dcb + ((b * nc + c) * ng + g) * q * q;
    float oacc[4][4];
    zero_acc(oacc);
    if (st <= lt && l0 < len) {
        for (i64 hh = 0; hh < hpg; ++hh) {
            const i64 h = g * hpg + hh;
            const float* dtc = dt + ((b * nh + h) * nc + c) * q;
            const float* dac = dacs + ((b * nh + h) * nc + c) * q;
            const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
            if (threadIdx.x < 64) {
                const i64 li = l0 + threadIdx.x, si = s0 + threadIdx.x;
                dlr[threadIdx.x] = li < len ? dac[li] : 0.0f;
                dsc[threadIdx.x] = si < len ? dac[si] : 0.0f;
                dlrl[threadIdx.x] = li < len ? lo_at(dlc, li) : 0.0f;
                dscl[threadIdx.x] = si < len ? lo_at(dlc, si) : 0.0f;
                dtc_s[threadIdx.x] = si < len ? dtc[si] : 0.0f;
            }
            const float* dyb = dy + ((b * l + c0) * nh + h) * np;
            const float* xb = x + ((b * l + c0) * nh + h) * np;
            float acc[4][4];
            zero_acc(acc);
            dy_x_product(acc, sm, dyb, xb, l0, s0, len, nh * np, np);
            if (np == 0) __syncthreads();
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 li = l0 + ty * 4 + i;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const i64 si = s0 + tx * 4 + j;
                    if (si <= li && li < len)
                        oacc[i][j] = fmaf(acc[i][j],
                                          dtc_s[tx * 4 + j] * exp_seg(dlr[ty * 4 + i], dlrl[ty * 4 + i],
                                                                      dsc[tx * 4 + j], dscl[tx * 4 + j]),
                                          oacc[i][j]);
                }
            }
            __syncthreads();
        }
    }
    store_qq_tile(ob, oacc, l0, s0, q, false);
}

// chunk_scan_bwd_ddacs_stable: per (b, c, h) and 64-row tile L of l, over the s tiles S ≤ L:
//   W[l, s] = (dy_l · x_s) Δ_s CB[l, s] exp(a_l − a_s) for s < l;
//   T_L[k] = Σ_{l ∈ L, l ≥ k} Σ_{s < k} W[l, s]   (k in (S.min, S.max + 1] for each S)
// formed from row prefix sums (carried across S tiles) and column sums over l ≥ k — sums of
// products, never differences. part[(b, h, c), L, k]; summed over L by reduce_parts (mode 0).
extern "C" __global__ void __launch_bounds__(NT, 2) bwd_ddacs_kernel(
    const float* __restrict__ x, const float* __restrict__ dt, const float* __restrict__ dacs,
    const float* __restrict__ dlo, const float* __restrict__ dy, const float* __restrict__ cb,
    float* __restrict__ part, i64 nb,
    i64 l, i64 nh, i64 np, i64 ng, i64 q, i64 nc) {
    __shared__ GemmSmem<4, 4> sm;
    __shared__ float Ws[64][65];
    __shared__ float dlr[64], dsc[64], dlrl[64], dscl[64], dts[64], carry[64];
    const i64 tq = (q + 63) / 64;
    BlockIdx bi;
    const i64 lt = bi.next(tq), h = bi.next(nh), c = bi.next(nc), b = bi.rest;
    const i64 g = h / (nh / ng);
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 l0 = lt * 64;
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    float* pb = part + (((b * nh + h) * nc + c) * tq + lt) * q;
    const float* dtc = dt + ((b * nh + h) * nc + c) * q;
    const float* dac = dacs + ((b * nh + h) * nc + c) * q;
    const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
    const float* cbb = cb + ((b * nc + c) * ng + g) * q * q;
    const float* dyb = dy + ((b * l + c0) * nh + h) * np;
    const float* xb = x + ((b * l + c0) * nh + h) * np;
    // k = 0 and k past this tile's rows get nothing from L
    // this tile writes k in [1, kmax] (positions are 0..q−1; rows l ≥ k exist in L up to l0 + 63)
    const i64 kmax = (l0 < len) ? min(q - 1, l0 + 63) : 0;
    for (i64 k = threadIdx.x; k < q; k += NT)
        if (k == 0 || k > kmax) pb[k] = 0.0f;
    if (l0 >= len) return;
    if (threadIdx.x < 64) {
        const i64 li = l0 + threadIdx.x;
        dlr[threadIdx.x] = li < len ? dac[li] : 0.0f;
        dlrl[threadIdx.x] = li < len ? lo_at(dlc, li) : 0.0f;
        carry[threadIdx.x] = 0.0f;
    }
    for (i64 st = 0; st <= lt; ++st) {
        const i64 s0 = st * 64;
        if (threadIdx.x < 64) {
            const i64 si = s0 + threadIdx.x;
            dsc[threadIdx.x] = si < len ? dac[si] : 0.0f;
            dscl[threadIdx.x] = si < len ? lo_at(dlc, si) : 0.0f;
            dts[threadIdx.x] = si < len ? dtc[si] : 0.0f;
        }
        float acc[4][4];
        zero_acc(acc);
        dy_x_product(acc, sm, dyb, xb, l0, s0, len, nh * np, np);
        if (np == 0) __syncthreads();
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const i64 li = l0 + ty * 4 + i;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const i64 si = s0 + tx * 4 + j;
                float w = 0.0f;
                if (si < li && li < len)
                    w = acc[i][j] * dts[tx * 4 + j] * cbb[li * q + si] *
                        exp_seg(dlr[ty * 4 + i], dlrl[ty * 4 + i], dsc[tx * 4 + j], dscl[tx * 4 + j]);
                Ws[ty * 4 + i][tx * 4 + j] = w;
            }
        }
        ddacs_tile_sums(Ws, carry, pb, l0, s0, kmax);
    }
}

// chunk_scan_bwd_dcb and chunk_scan_bwd_ddacs_stable in one pass (the combined backward): both
// are built on P = dy_L x_Sᵀ per head (K = p), which this forms once. Per (b, c, g), 64-row tile
// L (heaviest first) and a range of at most DDC_MAXH of the group's heads, over the s tiles S ≤ L
// in order, for each head of the range in turn:
//   dCB[l, s] += P[l, s] · Δ_s exp(a_l − a_s)           (s ≤ l, as bwd_dcb_kernel)
//   W[l, s] = P[l, s] Δ_s CB[l, s] exp(a_l − a_s)        (s < l) → the ddacs partials exactly as
//   bwd_ddacs_kernel (row prefixes carried across S per head, column sums over l ≥ k).
// Ranges hs0 .. hs0 + ngrid. Not `direct`: dCB of range hs goes to slice hs ((ranges, b, c, g,
// q, q)), summed over the slices in order by dcb_sum_parts_kernel. `direct`: into dCB itself,
// the tiles above the diagonal zeroed, or with `accumulate` added to it on and below the
// diagonal (one launch per range, in order: the same sums as the slices).
#define DDC_MAXH 16
extern "C" __global__ void __launch_bounds__(NT, 3) bwd_dcb_ddacs_kernel(
    const float* __restrict__ x, const float* __restrict__ dt, const float* __restrict__ dacs,
    const float* __restrict__ dlo, const float* __restrict__ dy, const float* __restrict__ cb,
    float* __restrict__ dcb_out, float* __restrict__ part, i64 nb, i64 l, i64 nh, i64 np, i64 ng,
    i64 q, i64 nc, i64 ngrid, i64 hs0, i64 hper, int direct, int accumulate) {
    __shared__ GemmSmem<4, 4> sm;
    __shared__ float Ws[64][65];
    __shared__ float dlr[64], dsc[64], dlrl[64], dscl[64], dts[64];
    __shared__ float carry[DDC_MAXH][64];
    const i64 tq = (q + 63) / 64;
    BlockIdx bi;
    const i64 hs = hs0 + bi.next(ngrid), g = bi.next(ng), c = bi.next(nc), b = bi.next(nb);
    const i64 lt = tq - 1 - bi.rest;  // the rows with the most s tiles are launched first
    const i64 hpg = nh / ng;
    const i64 h0 = g * hpg + hs * hper;
    const i64 nhr = max((i64)0, min(hper, g * hpg + hpg - h0));
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 l0 = lt * 64;
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    float* ob = dcb_out + ((((direct ? 0 : hs) * nb + b) * nc + c) * ng + g) * q * q;
    const float* cbb = cb + ((b * nc + c) * ng + g) * q * q;
    const i64 kmax = (l0 < len) ? min(q - 1, l0 + 63) : 0;
    for (i64 hh = 0; hh < nhr; ++hh) {
        float* pb = part + (((b * nh + h0 + hh) * nc + c) * tq + lt) * q;
        for (i64 k = tid; k < q; k += NT)
            if (k == 0 || k > kmax) pb[k] = 0.0f;
    }
    // dCB tiles of this row: computed for S ≤ L (all zero when L is past the chunk's end);
    // above the diagonal zero, written here only when writing dCB itself, first
    const i64 st_end = (direct && !accumulate) ? tq : lt + 1;
    for (i64 st = 0; st < st_end; ++st) {
        const i64 s0 = st * 64;
        float oacc[4][4];
        zero_acc(oacc);
        if (st <= lt && l0 < len) {
            for (i64 hh = 0; hh < nhr; ++hh) {
                const i64 h = h0 + hh;
                const float* dtc = dt + ((b * nh + h) * nc + c) * q;
                const float* dac = dacs + ((b * nh + h) * nc + c) * q;
                const float* dlc = dlo ? dlo + ((b * nh + h) * nc + c) * q : nullptr;
                float* pb = part + (((b * nh + h) * nc + c) * tq + lt) * q;
                if (tid < 64) {
                    const i64 li = l0 + tid, si = s0 + tid;
                    dlr[tid] = li < len ? dac[li] : 0.0f;
                    dlrl[tid] = li < len ? lo_at(dlc, li) : 0.0f;
                    dsc[tid] = si < len ? dac[si] : 0.0f;
                    dscl[tid] = si < len ? lo_at(dlc, si) : 0.0f;
                    dts[tid] = si < len ? dtc[si] : 0.0f;
                    if (st == 0) carry[hh][tid] = 0.0f;
                }
                const float* dyb = dy + ((b * l + c0) * nh + h) * np;
                const float* xb = x + ((b * l + c0) * nh + h) * np;
                float acc[4][4];
                zero_acc(acc);
                dy_x_product(acc, sm, dyb, xb, l0, s0, len, nh * np, np);
                if (np == 0) __syncthreads();
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const i64 li = l0 + ty * 4 + i;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const i64 si = s0 + tx * 4 + j;
                        float w = 0.0f;
                        if (si <= li && li < len) {
                            const float e = exp_seg(dlr[ty * 4 + i], dlrl[ty * 4 + i], dsc[tx * 4 + j],
                                                    dscl[tx * 4 + j]);
                            oacc[i][j] = fmaf(acc[i][j], dts[tx * 4 + j] * e, oacc[i][j]);
                            if (si < li) w = acc[i][j] * dts[tx * 4 + j] * cbb[li * q + si] * e;
                        }
                        Ws[ty * 4 + i][tx * 4 + j] = w;
                    }
                }
                ddacs_tile_sums(Ws, carry[hh], pb, l0, s0, kmax);
            }
        }
        store_qq_tile(ob, oacc, l0, s0, q, accumulate);
    }
}

// dCB = Σ_hs part[hs] in order, for the tiles on and below the diagonal (64-blocks of l and
// s); 0 above it (the parts are not written there). n = b·c·g·q·q.
extern "C" __global__ void __launch_bounds__(NT) dcb_sum_parts_kernel(
    const float* __restrict__ part, float* __restrict__ dcb, i64 nsplit, i64 n, i64 q) {
    const i64 e = (i64)blockIdx.x * NT + threadIdx.x;
    if (e >= n) return;
    const i64 si = e % q, li = (e / q) % q;
    float s = 0.0f;
    if (si / 64 <= li / 64)
        for (i64 r = 0; r < nsplit; ++r) s += part[r * n + e];
    dcb[e] = s;
}

// bmm_chunk_bwd, dB (mode 0): dB[s, n] (+)= Σ_l dCBm[l, s] C[l, n];
//                dC (mode 1): dC[l, n] (+)= Σ_s dCBm[l, s] B[s, n];
// dCBm = dCB with the id mask and padding of bmm_chunk. `causal`: dCB is lower triangular
// (the K range is cut to it, and each thread skips the steps its own rows do not reach).
// Per (b, c, g), 64 × 128 tile (token, n), 128 threads of 8 × 8 (as chunk_state_kernel).
extern "C" __global__ void __launch_bounds__(NT8, 3) bmm_chunk_bwd_kernel(
    int mode, const float* __restrict__ dcb, const float* __restrict__ Y, const int* __restrict__ seq,
    float* __restrict__ out, int accumulate, int causal, i64 nb, i64 l, i64 ng, i64 nn, i64 q,
    i64 nc) {
    constexpr int TM = 8, TN = 8, NTH = NT8, BM = NTH / 16 * TM, BN = 16 * TN;
    __shared__ GemmSmem<TM, TN, NTH> sm;
    __shared__ int rid[BM];
    const i64 tq = (q + BM - 1) / BM, tn = (nn + BN - 1) / BN;
    BlockIdx bi;
    const i64 nt = bi.next(tn), rt = bi.next(tq), g = bi.next(ng), c = bi.next(nc), b = bi.rest;
    const i64 c0 = c * q;
    const i64 len = min(q, l - c0);
    const i64 r0 = rt * BM, n0 = nt * BN;
    if (r0 >= len) return;
    const float* db = dcb + ((b * nc + c) * ng + g) * q * q;
    const float* Yb = Y + ((b * l + c0) * ng + g) * nn;
    if (threadIdx.x < BM) {
        const i64 r = r0 + threadIdx.x;
        rid[threadIdx.x] = r < len ? seq_at(seq, l, b, c0 + r) : -1;
    }
    float acc[TM][TN];
    zero_acc(acc);
    i64 kbeg = 0, kend = len;
    i64 kcap = 0x7fffffffffffffffll, kfloor = 0;
    if (causal) {
        if (mode == 0) {
            kbeg = r0;  // l ≥ s
            kfloor = r0 + tile_row(TM, 0);
        } else {
            kend = min(len, r0 + BM);  // s ≤ l
            kcap = r0 + tile_row(TM, TM - 1);
        }
    }
    kbeg = (kbeg / BKK) * BKK;
    __syncthreads();  // rid
    auto lb = [&](int n, i64 k) -> float4 {  // Y[k, n .. + 4)
        return k < kend ? ld4(Yb + k * ng * nn, n0 + n, nn) : f4_zero();
    };
    if (mode == 0) {
        gemm_loop<TM, TN, false, false, NTH>(
            acc, sm, kbeg, kend,
            [&](int m, i64 k) -> float4 {  // A[s .. + 4, l = k] = dCB[l, s .. + 4), same ids
                if (k >= kend) return f4_zero();
                float4 v = ld4(db + k * q, r0 + m, len);
                const int idk = seq_at(seq, l, b, c0 + k);
                if (rid[m] != idk) v.x = 0.0f;
                if (rid[m + 1] != idk) v.y = 0.0f;
                if (rid[m + 2] != idk) v.z = 0.0f;
                if (rid[m + 3] != idk) v.w = 0.0f;
                return v;
            },
            lb, kcap, kfloor);
    } else {
        gemm_loop<TM, TN, true, false, NTH>(
            acc, sm, kbeg, kend,
            [&](int m, i64 k) -> float4 {  // A[l = r0 + m, s = k .. + 4) = dCB[l, s .. + 4)
                const i64 li = r0 + m;
                if (li >= len || k >= kend) return f4_zero();
                float4 v = ld4(db + li * q, k, kend);
                const int id = rid[m];
                if (seq) {
                    if (seq_at(seq, l, b, c0 + k) != id) v.x = 0.0f;
                    if (k + 1 < kend && seq_at(seq, l, b, c0 + k + 1) != id) v.y = 0.0f;
                    if (k + 2 < kend && seq_at(seq, l, b, c0 + k + 2) != id) v.z = 0.0f;
                    if (k + 3 < kend && seq_at(seq, l, b, c0 + k + 3) != id) v.w = 0.0f;
                }
                return v;
            },
            lb, kcap, kfloor);
    }
    float* ob = out + ((b * l + c0) * ng + g) * nn;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const i64 rr = r0 + tile_row(TM, i);
        if (rr >= len) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const i64 ni = n0 + tile_col(j);
            if (ni >= nn) continue;
            const i64 o = rr * ng * nn + ni;
            ob[o] = accumulate ? ob[o] + acc[i][j] : acc[i][j];
        }
    }
}

// The combined backward's assembly of the A adjoint, per (b, h, c):
//   intra = Σ_L part_intra; next = exclusive prefix of Σ part_u; prev = reverse cumsum of
//   Σ part_v; chunk = ddA_chunk_c at valid positions; ddA = intra + next + prev + chunk.
extern "C" __global__ void __launch_bounds__(NT) assemble_dda_kernel(
    const float* __restrict__ part_intra, i64 n_intra, const float* __restrict__ part_u,
    const float* __restrict__ part_v, i64 n_uv, const float* __restrict__ ddA_chunk,
    float* __restrict__ dda, float* __restrict__ adj_intra, float* __restrict__ adj_next,
    float* __restrict__ adj_prev, float* __restrict__ adj_chunk, i64 l, i64 q, i64 nc) {
    __shared__ float red[32];
    const i64 bhc = blockIdx.x;
    const i64 c = bhc % nc;
    const i64 len = min(q, l - c * q);
    const float chunk = ddA_chunk[bhc];
    const i64 nseg = (q + NT - 1) / NT;
    // forward pass: intra, next, chunk. next_k = Σ_{s<k} U_s is the inclusive scan of U shifted
    // by one (thread k holds U_{k−1}), not `inclusive − U_k`: U_s ∝ exp(a_last − a_s) grows by
    // e^{Δ|A|} per step, so U_k can dwarf Σ_{s<k} U_s (by 3e8 on a drawn case, where the
    // difference returned 0 for a true −2e-9 and dA_h was off by 1.9e-2 of its terms).
    float carry = 0.0f;
    for (i64 sg = 0; sg < nseg; ++sg) {
        const i64 k = sg * NT + threadIdx.x;
        float u = 0.0f, in = 0.0f;
        if (k < q) {
            if (k >= 1)
                for (i64 pp = 0; pp < n_uv; ++pp) u += part_u[(bhc * n_uv + pp) * q + k - 1];
            for (i64 pp = 0; pp < n_intra; ++pp) in += part_intra[(bhc * n_intra + pp) * q + k];
        }
        float total;
        const float excl = block_inclusive_scan(u, red, total);
        if (k < q) {
            const i64 o = bhc * q + k;
            adj_intra[o] = in;
            adj_next[o] = k < len ? carry + excl : 0.0f;
            adj_chunk[o] = k < len ? chunk : 0.0f;
        }
        carry += total;
    }
    // reverse pass: prev, then the total
    carry = 0.0f;
    for (i64 sg = 0; sg < nseg; ++sg) {
        const i64 idx = sg * NT + threadIdx.x;
        const i64 k = q - 1 - idx;
        float v = 0.0f;
        if (idx < q)
            for (i64 pp = 0; pp < n_uv; ++pp) v += part_v[(bhc * n_uv + pp) * q + k];
        float total;
        const float incl = block_inclusive_scan(v, red, total);
        if (idx < q) {
            const i64 o = bhc * q + k;
            const float pv = carry + incl;
            adj_prev[o] = pv;
            dda[o] = adj_intra[o] + adj_next[o] + pv + adj_chunk[o];
        }
        carry += total;
    }
}

// chunk_cumsum_bwd: per (b, h): dΔ = ddA·A + ddt_direct; ddt = dΔ · process_dt'(dt);
// partials of dA = Σ ddA·Δ and ddt_bias = Σ ddt → part[(b, h), 2]; summed over b by
// chunk_cumsum_bwd_reduce.
extern "C" __global__ void __launch_bounds__(NT) chunk_cumsum_bwd_kernel(
    const float* __restrict__ dda, const float* __restrict__ ddt_direct, const float* __restrict__ dt,
    const float* __restrict__ A, const float* __restrict__ dt_bias, float* __restrict__ ddt,
    float* __restrict__ part, i64 nb, i64 l, i64 nh, i64 q, i64 nc, int softplus, float lo, float hi) {
    __shared__ float red[32];
    BlockIdx bi;
    const i64 h = bi.next(nh), b = bi.rest;
    const float a = A[h];
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    float sa = 0.0f, sb = 0.0f;
    for (i64 t = threadIdx.x; t < l; t += NT) {
        const i64 c = t / q, i = t % q;
        const i64 o = ((b * nh + h) * nc + c) * q + i;
        const float dtv = dt[(b * l + t) * nh + h];
        const float delta = process_dt_f(dtv, bias, softplus, lo, hi);
        const float gd = dda[o];
        const float dD = fmaf(gd, a, ddt_direct[o]);
        const float v = dD * process_dt_grad_f(dtv, bias, softplus, lo, hi);
        ddt[(b * l + t) * nh + h] = v;
        sa = fmaf(gd, delta, sa);
        sb += v;
    }
    sa = block_sum(sa, red);
    sb = block_sum(sb, red);
    if (threadIdx.x == 0) {
        part[(b * nh + h) * 2] = sa;
        part[(b * nh + h) * 2 + 1] = sb;
    }
}

extern "C" __global__ void __launch_bounds__(NT) chunk_cumsum_bwd_reduce_kernel(
    const float* __restrict__ part, float* __restrict__ da, float* __restrict__ dbias, i64 nb, i64 nh) {
    const i64 h = (i64)blockIdx.x * NT + threadIdx.x;
    if (h >= nh) return;
    float sa = 0.0f, sb = 0.0f;
    for (i64 b = 0; b < nb; ++b) {
        sa += part[(b * nh + h) * 2];
        sb += part[(b * nh + h) * 2 + 1];
    }
    da[h] = sa;
    if (dbias) dbias[h] = sb;
}
