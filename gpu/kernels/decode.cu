// decode.cu — selective_state_update [selective_state_update]: one decode step, in place.
//
// Per row b (state slot i = state_batch_indices[b], or b) and head h:
// H = exp(Δ A) H + Δ x ⊗ B, y = H C + D ⊙ x, out = y ⊙ silu(z). A slot < 0 marks padding: the
// output row is 0 and no state is touched. One block per (b, h); one warp per row p (lanes over
// n, a fixed-order shuffle reduction for y).
extern "C" __global__ void __launch_bounds__(128) selective_state_update_kernel(
    float* __restrict__ state, const float* __restrict__ x, const float* __restrict__ dt,
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ C,
    const float* __restrict__ D, int d_per_channel, const float* __restrict__ z,
    const float* __restrict__ dt_bias, const int* __restrict__ sbi, float* __restrict__ out, i64 nb,
    i64 nh, i64 np, i64 ng, i64 nn, int softplus, float lo, float hi) {
    BlockIdx bi;
    const i64 h = bi.next(nh), b = bi.rest;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 slot = sbi ? (i64)sbi[b] : b;
    if (slot < 0) {
        for (i64 p = threadIdx.x; p < np; p += blockDim.x) out[(b * nh + h) * np + p] = 0.0f;
        return;
    }
    const i64 g = h / (nh / ng);
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    const float delta = process_dt_f(dt[b * nh + h], bias, softplus, lo, hi);
    const float decay = expf(delta * A[h]);
    const float* Bb = B + (b * ng + g) * nn;
    const float* Cb = C + (b * ng + g) * nn;
    for (i64 p = warp; p < np; p += 4) {
        const float xv = x[(b * nh + h) * np + p];
        const float dx = delta * xv;
        float* st = state + ((slot * nh + h) * np + p) * nn;
        float sum = 0.0f;
        for (i64 n = lane; n < nn; n += 32) {
            const float v = decay * st[n] + dx * Bb[n];
            st[n] = v;
            sum = fmaf(v, Cb[n], sum);
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            float yv = sum;
            if (D) yv += (d_per_channel ? D[h * np + p] : D[h]) * xv;
            if (z) yv *= silu_f(z[(b * nh + h) * np + p]);
            out[(b * nh + h) * np + p] = yv;
        }
    }
}
