// Version 2 of the small-batch kernels (bs-mmsq.cuh says what they do and why): the activations
// sit in shared memory, each warp owns one 16-row tile and walks over its block's super-blocks
// with the next super-block's weights already loading into registers (one ahead). The first
// version kept each warp's activations in registers (~100 of them), so few warps fit on an SM and
// it was latency-bound (0.45-1.1 TB/s at 16 columns on the H100, test-mmsq); it is not kept.
#pragma once

#include "bs-mmsq.cuh"

// Programmatic dependent launch (sm_90): the matrix kernel is launched while the quantizer still
// runs, loads its first weights, and only then waits for the quantizer's output.
static __device__ __forceinline__ void bs_grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void bs_grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}


// Fragment-ordered activations for up to 16 columns, per 32-value block (kb, sb):
//   q:  [kb][sb][n 2][g 8][t 4][8 bytes]: column 8n+g, values 256kb + 32sb + 8t + [0, 8)
//   ds: [kb][sb][n 2][t 4][2] float2 (d, d*sum): column 8n + 2t + j
// so a warp's B fragments of one (sb, n) are 256 contiguous bytes (conflict-free in smem).
static __global__ void bs_mmsq2_quantize(const float * __restrict__ src, int64_t ld_src, int ncols, int K,
                                         int8_t * __restrict__ yq, float2 * __restrict__ yd) {
    bs_grid_dependency_wait();     // x comes from the kernel before (launched with PDL)
    bs_grid_dependents_launch();   // the matrix kernel may start loading weights now
    const int lane = threadIdx.x;
    const int blk  = blockIdx.x * blockDim.y + threadIdx.y;   // 32-value block index along K
    const int col  = blockIdx.y;
    if (blk * 32 >= K) {
        return;
    }
    const float x = col < ncols ? src[col * ld_src + blk * 32 + lane] : 0.0f;
    float amax = fabsf(x);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
    }
    const float d = amax / 127.0f;
    const int   q = amax == 0.0f ? 0 : __float2int_rn(x / d);
    int sum = q;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        sum += __shfl_xor_sync(0xffffffff, sum, o);
    }
    const int kb = blk / 8, sb = blk % 8, n = col / 8, g = col % 8;
    const int64_t base = (int64_t) ((kb * 8 + sb) * 2 + n) * 256;   // 256 bytes per (kb, sb, n)
    yq[base + g * 32 + lane] = (int8_t) q;                          // t = lane / 8, i = lane % 8
    if (lane == 0) {
        const int t = (col % 8) / 2, j = col % 2;
        yd[(((int64_t) (kb * 8 + sb) * 2 + n) * 4 + t) * 2 + j] = make_float2(d, d * (float) sum);
    }
}

// Bytes of fragment-ordered activations per super-block (both column tiles).
#define BS_MMSQ2_Q_PER_KB  (8 * 2 * 256)
#define BS_MMSQ2_DS_PER_KB (8 * 2 * 4 * 2 * 8)
#define BS_MMSQ2_SMEM_PER_KB (BS_MMSQ2_Q_PER_KB + BS_MMSQ2_DS_PER_KB)

// Copy activations of super-blocks [kb0, kb0 + nk) into shared memory (uint4 per thread).
static __device__ __forceinline__ void bs_mmsq2_fill(uint8_t * sm, const int8_t * __restrict__ yq,
                                                     const float2 * __restrict__ yd, int kb0, int nk) {
    const int tid = threadIdx.y * 32 + threadIdx.x, nthr = blockDim.x * blockDim.y;
    const uint4 * gq = (const uint4 *) (yq + (int64_t) kb0 * BS_MMSQ2_Q_PER_KB);
    uint4 * sq = (uint4 *) sm;
    for (int i = tid; i < nk * BS_MMSQ2_Q_PER_KB / 16; i += nthr) {
        sq[i] = gq[i];
    }
    const uint4 * gd = (const uint4 *) ((const uint8_t *) yd + (int64_t) kb0 * BS_MMSQ2_DS_PER_KB);
    uint4 * sd = (uint4 *) (sm + nk * BS_MMSQ2_Q_PER_KB);
    for (int i = tid; i < nk * BS_MMSQ2_DS_PER_KB / 16; i += nthr) {
        sd[i] = gd[i];
    }
}

// Store a warp's 16 x (8 NT) results: straight to dst (one K split) or to part[split], which
// bs_mmsq2_sum_splits then adds in order (deterministic). Tried and measured slower on the H100:
// the last block of a row group adding the splits itself (atomic counters, no second kernel).
template <int NW, int NT>
static __device__ __forceinline__ void bs_mmsq2_store(const float (&acc)[NT][4], float * __restrict__ dst,
                                                      int64_t ld_dst, float * __restrict__ part, int64_t nrows,
                                                      int ncols, int64_t row0) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const bool split = gridDim.y > 1;
    float * o = split ? part + (int64_t) blockIdx.y * BS_MMSQ_MAX_COLS * nrows : dst;
    const int64_t ld = split ? nrows : ld_dst;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const int c0 = 8 * n + 2 * t;
        if (c0 < ncols) {
            o[(int64_t) c0 * ld + row0 + g]     = acc[n][0];
            o[(int64_t) c0 * ld + row0 + g + 8] = acc[n][2];
        }
        if (c0 + 1 < ncols) {
            o[(int64_t) (c0 + 1) * ld + row0 + g]     = acc[n][1];
            o[(int64_t) (c0 + 1) * ld + row0 + g + 8] = acc[n][3];
        }
    }
}

struct bs_q4k_tile {   // what thread (g, t) loads of one super-block of rows g and g+8
    uint4 hdr[2];      // d, dmin, 12 bytes of scales
    uint2 q[2][4];     // [row][pair]: bytes 32 p + 8 t .. + 7 of qs
};

static __device__ __forceinline__ void bs_q4k_load(bs_q4k_tile & w, const uint8_t * __restrict__ blk_g,
                                                   int64_t row_bytes, int t) {
    const uint8_t * blk[2] = {blk_g, blk_g + 8 * row_bytes};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        w.hdr[r] = __ldg((const uint4 *) blk[r]);
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            w.q[r][p] = __ldg((const uint2 *) (blk[r] + 16 + 32 * p + 8 * t));
        }
    }
}

static __device__ __forceinline__ void bs_q4k_scales_from(const uint4 & h, float (&dsc)[8], float (&dmn)[8]) {
    const half2 dm = *(const half2 *) &h.x;
    const float d = __low2float(dm), dmin = __high2float(dm);
    const uint32_t u[3] = {h.y, h.z, h.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        auto byte = [&](int i) { return (int) ((u[i / 4] >> (8 * (i % 4))) & 0xff); };
        int sv, mv;
        if (j < 4) {
            sv = byte(j) & 63;
            mv = byte(j + 4) & 63;
        } else {
            sv = (byte(j + 4) & 0xF) | ((byte(j - 4) >> 6) << 4);
            mv = (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4);
        }
        dsc[j] = d * (float) sv;
        dmn[j] = dmin * (float) mv;
    }
}

// Grid: x = nrows / (16 NW), y = K splits of kps super-blocks each. Block: NW warps.
// out: dst (gridDim.y == 1) or partial sums [y][ncols][ld_dst].
template <int NW, int NT>
static __global__ void __launch_bounds__(NW * 32)
bs_mmsq2_q4_K(const uint8_t * __restrict__ W, int64_t row_bytes, int nkb, int kps, const int8_t * __restrict__ yq,
              const float2 * __restrict__ yd, float * __restrict__ dst, int64_t ld_dst, float * __restrict__ part,
              int64_t nrows, int ncols) {
    extern __shared__ __align__(16) uint8_t sm[];
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int g = lane >> 2, t = lane & 3;
    const int kb0 = blockIdx.y * kps;
    const int nk  = min(kps, nkb - kb0);
    const int64_t row0 = ((int64_t) blockIdx.x * NW + warp) * 16;
    const uint8_t * wrow = W + (row0 + g) * row_bytes + (int64_t) kb0 * 144;

    bs_q4k_tile cur, nxt;
    bs_q4k_load(cur, wrow, row_bytes, t);   // in flight while the activations are copied
    bs_grid_dependency_wait();   // the activations come from the kernel before
    bs_mmsq2_fill(sm, yq, yd, kb0, nk);
    __syncthreads();
    const int2   * sq = (const int2 *) sm;
    const float4 * sd = (const float4 *) (sm + nk * BS_MMSQ2_Q_PER_KB);

    float acc[NT][4] = {};
    for (int k = 0; k < nk; ++k) {
        if (k + 1 < nk) {
            bs_q4k_load(nxt, wrow + (int64_t) (k + 1) * 144, row_bytes, t);
        }
        float dsc[2][8], dmn[2][8];
        bs_q4k_scales_from(cur.hdr[0], dsc[0], dmn[0]);
        bs_q4k_scales_from(cur.hdr[1], dsc[1], dmn[1]);
#pragma unroll
        for (int p = 0; p < 4; ++p) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int sb = 2 * p + h, sh = 4 * h;
                const int a0 = (cur.q[0][p].x >> sh) & 0x0F0F0F0F;
                const int a2 = (cur.q[0][p].y >> sh) & 0x0F0F0F0F;
                const int a1 = (cur.q[1][p].x >> sh) & 0x0F0F0F0F;
                const int a3 = (cur.q[1][p].y >> sh) & 0x0F0F0F0F;
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const int2   b  = sq[((k * 8 + sb) * 2 + n) * 32 + lane];
                    const float4 ys = sd[((k * 8 + sb) * 2 + n) * 4 + t];   // d0, s0, d1, s1
                    int c[4];
                    bs_mma_k32(c, a0, a1, a2, a3, b.x, b.y);
                    acc[n][0] += dsc[0][sb] * ys.x * (float) c[0] - dmn[0][sb] * ys.y;
                    acc[n][1] += dsc[0][sb] * ys.z * (float) c[1] - dmn[0][sb] * ys.w;
                    acc[n][2] += dsc[1][sb] * ys.x * (float) c[2] - dmn[1][sb] * ys.y;
                    acc[n][3] += dsc[1][sb] * ys.z * (float) c[3] - dmn[1][sb] * ys.w;
                }
            }
        }
        cur = nxt;
    }
    bs_mmsq2_store<NW, NT>(acc, dst, ld_dst, part, nrows, ncols, row0);
}

struct bs_q6k_tile {     // thread (g, t), rows g and g+8: per (hf, s) the ints at 16 s + 4 t
    int ql_lo[2][2][2];  // [row][hf][s]
    int ql_hi[2][2][2];
    int qh[2][2][2];
    int sc[2][4];        // 16 int8 scales
    half d[2];
};

static __device__ __forceinline__ void bs_q6k_load(bs_q6k_tile & w, const uint8_t * __restrict__ blk_g,
                                                   int64_t row_bytes, int t) {
    const uint8_t * blk[2] = {blk_g, blk_g + 8 * row_bytes};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                w.ql_lo[r][hf][s] = bs_ld_b2(blk[r] + 64 * hf + 16 * s + 4 * t);
                w.ql_hi[r][hf][s] = bs_ld_b2(blk[r] + 64 * hf + 32 + 16 * s + 4 * t);
                w.qh[r][hf][s]    = bs_ld_b2(blk[r] + 128 + 32 * hf + 16 * s + 4 * t);
            }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w.sc[r][i] = bs_ld_b2(blk[r] + 192 + 4 * i);
        }
        w.d[r] = __ldg((const half *) (blk[r] + 208));
    }
}

template <int NW, int NT>
static __global__ void __launch_bounds__(NW * 32)
bs_mmsq2_q6_K(const uint8_t * __restrict__ W, int64_t row_bytes, int nkb, int kps, const int8_t * __restrict__ yq,
              const float2 * __restrict__ yd, float * __restrict__ dst, int64_t ld_dst, float * __restrict__ part,
              int64_t nrows, int ncols) {
    extern __shared__ __align__(16) uint8_t sm[];
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int g = lane >> 2, t = lane & 3;
    const int kb0 = blockIdx.y * kps;
    const int nk  = min(kps, nkb - kb0);
    const int64_t row0 = ((int64_t) blockIdx.x * NW + warp) * 16;
    const uint8_t * wrow = W + (row0 + g) * row_bytes + (int64_t) kb0 * 210;

    bs_q6k_tile cur, nxt;
    bs_q6k_load(cur, wrow, row_bytes, t);
    bs_grid_dependency_wait();   // the activations come from the kernel before
    bs_mmsq2_fill(sm, yq, yd, kb0, nk);
    __syncthreads();
    const int    * sq = (const int *) sm;
    const float4 * sd = (const float4 *) (sm + nk * BS_MMSQ2_Q_PER_KB);

    float acc[NT][4] = {};
    for (int k = 0; k < nk; ++k) {
        if (k + 1 < nk) {
            bs_q6k_load(nxt, wrow + (int64_t) (k + 1) * 210, row_bytes, t);
        }
        float dsc[2][16];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float d = __half2float(cur.d[r]);
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                dsc[r][i] = d * (float) (int8_t) ((cur.sc[r][i / 4] >> (8 * (i % 4))) & 0xff);
            }
        }
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int p = 0; p < 4; ++p) {
                    int a[2];
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const int lo = (p & 1) ? cur.ql_hi[r][hf][s] : cur.ql_lo[r][hf][s];
                        const int v  = ((lo >> (4 * (p >> 1))) & 0x0F0F0F0F) |
                                      (((cur.qh[r][hf][s] >> (2 * p)) << 4) & 0x30303030);
                        a[r] = __vsubss4(v, 0x20202020);
                    }
                    const int sci = 8 * hf + s + 2 * p;
                    const int sb  = 4 * hf + p;   // the q8 block of these 16 values
#pragma unroll
                    for (int n = 0; n < NT; ++n) {
                        // Values 16 s + 4 t .. + 3 of block sb, column 8n+g: fragment thread 2s + t/2,
                        // byte 4 (t % 2) of its 8.
                        const int b = sq[(((k * 8 + sb) * 2 + n) * 256 + g * 32 + (2 * s + t / 2) * 8 + 4 * (t % 2)) / 4];
                        const float4 ys = sd[((k * 8 + sb) * 2 + n) * 4 + t];
                        int c[4];
                        bs_mma_k16(c, a[0], a[1], b);
                        acc[n][0] += dsc[0][sci] * ys.x * (float) c[0];
                        acc[n][1] += dsc[0][sci] * ys.z * (float) c[1];
                        acc[n][2] += dsc[1][sci] * ys.x * (float) c[2];
                        acc[n][3] += dsc[1][sci] * ys.z * (float) c[3];
                    }
                }
        cur = nxt;
    }
    bs_mmsq2_store<NW, NT>(acc, dst, ld_dst, part, nrows, ncols, row0);
}

// Q8_0: 34 bytes per 32 values (half d, 32 int8), only 2-byte aligned. A "super-block" here is 8
// of them (256 values), so the activations have the same layout as for the k-quants.
struct bs_q80_tile {   // thread (g, t), rows g and g+8, 8 blocks: values 8t .. 8t+7 and the scale
    int  q[2][8][2];
    half d[2][8];
};

static __device__ __forceinline__ void bs_q80_load(bs_q80_tile & w, const uint8_t * __restrict__ blk_g,
                                                   int64_t row_bytes, int t) {
    const uint8_t * blk[2] = {blk_g, blk_g + 8 * row_bytes};
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int b = 0; b < 8; ++b) {
            const uint8_t * p = blk[r] + 34 * b;
            w.d[r][b]    = __ldg((const half *) p);
            w.q[r][b][0] = bs_ld_b2(p + 2 + 8 * t);
            w.q[r][b][1] = bs_ld_b2(p + 2 + 8 * t + 4);
        }
}

template <int NW, int NT>
static __global__ void __launch_bounds__(NW * 32)
bs_mmsq2_q8_0(const uint8_t * __restrict__ W, int64_t row_bytes, int nkb, int kps, const int8_t * __restrict__ yq,
              const float2 * __restrict__ yd, float * __restrict__ dst, int64_t ld_dst, float * __restrict__ part,
              int64_t nrows, int ncols) {
    extern __shared__ __align__(16) uint8_t sm[];
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int g = lane >> 2, t = lane & 3;
    const int kb0 = blockIdx.y * kps;
    const int nk  = min(kps, nkb - kb0);
    const int64_t row0 = ((int64_t) blockIdx.x * NW + warp) * 16;
    const uint8_t * wrow = W + (row0 + g) * row_bytes + (int64_t) kb0 * 272;

    bs_q80_tile cur, nxt;
    bs_q80_load(cur, wrow, row_bytes, t);
    bs_grid_dependency_wait();   // the activations come from the kernel before
    bs_mmsq2_fill(sm, yq, yd, kb0, nk);
    __syncthreads();
    const int2   * sq = (const int2 *) sm;
    const float4 * sd = (const float4 *) (sm + nk * BS_MMSQ2_Q_PER_KB);

    float acc[NT][4] = {};
    for (int k = 0; k < nk; ++k) {
        if (k + 1 < nk) {
            bs_q80_load(nxt, wrow + (int64_t) (k + 1) * 272, row_bytes, t);
        }
#pragma unroll
        for (int sb = 0; sb < 8; ++sb) {
            const float d0 = __half2float(cur.d[0][sb]), d1 = __half2float(cur.d[1][sb]);
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const int2   b  = sq[((k * 8 + sb) * 2 + n) * 32 + lane];
                const float4 ys = sd[((k * 8 + sb) * 2 + n) * 4 + t];
                int c[4];
                bs_mma_k32(c, cur.q[0][sb][0], cur.q[1][sb][0], cur.q[0][sb][1], cur.q[1][sb][1], b.x, b.y);
                acc[n][0] += d0 * ys.x * (float) c[0];
                acc[n][1] += d0 * ys.z * (float) c[1];
                acc[n][2] += d1 * ys.x * (float) c[2];
                acc[n][3] += d1 * ys.z * (float) c[3];
            }
        }
        cur = nxt;
    }
    bs_mmsq2_store<NW, NT>(acc, dst, ld_dst, part, nrows, ncols, row0);
}

// dst[c][r] = sum over splits of part[s][c][r], in split order.
static __global__ void bs_mmsq2_sum_splits(const float * __restrict__ part, int nsplit, int64_t nrows, int ncols,
                                           float * __restrict__ dst, int64_t ld_dst) {
    bs_grid_dependency_wait();   // the partial sums come from the matrix kernel (launched with PDL)
    const int64_t r = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    if (r >= nrows || c >= ncols) {
        return;
    }
    float v = 0.0f;
    for (int s = 0; s < nsplit; ++s) {
        v += part[((int64_t) s * BS_MMSQ_MAX_COLS + c) * nrows + r];
    }
    dst[(int64_t) c * ld_dst + r] = v;
}

// Scratch bytes: activations + (if K is split) partial sums.
static inline size_t bs_mmsq2_scratch(int64_t K, int64_t nrows, int nsplit) {
    const int64_t nkb = K / 256;
    size_t b = (size_t) nkb * BS_MMSQ2_SMEM_PER_KB;
    if (nsplit > 1) {
        b += (size_t) nsplit * BS_MMSQ_MAX_COLS * nrows * sizeof(float);
    }
    return b;
}

// Splits of K: enough blocks to give every SM a few, at most 8 super-blocks per block (the
// shared memory per block is 5 KB per super-block).
static inline int bs_mmsq2_splits(int64_t nrows, int nkb, int nw, int nsm) {
    const int64_t groups = nrows / (16 * nw);
    int s = 1;
    while ((nkb + s - 1) / s > 8 || (groups * s < 4 * nsm && (nkb + 2 * s - 1) / (2 * s) >= 2)) {
        s *= 2;
    }
    return s;
}

// Three kernels, each launched with programmatic stream serialization (PDL): it may start before
// the kernel ahead of it ends and waits for that kernel's output with griddepcontrol.wait, so the
// launch latency and the first weight loads overlap the previous kernel's tail. In CUDA graphs,
// ggml's case, the dependencies are captured as programmatic edges.
template <int NW>
static void bs_mmsq2_launch(bs_mmsq_type type, const void * W, int64_t nrows, int64_t row_bytes, int nkb,
                            const float * x, int64_t ld_x, int ncols, float * dst, int64_t ld_dst, void * scratch,
                            int nsplit, cudaStream_t stream) {
    const int K = nkb * 256;
    int8_t * yq = (int8_t *) scratch;
    float2 * yd = (float2 *) (yq + (size_t) nkb * BS_MMSQ2_Q_PER_KB);
    float * part = (float *) ((uint8_t *) scratch + (size_t) nkb * BS_MMSQ2_SMEM_PER_KB);
    cudaLaunchAttribute pdl[1];
    pdl[0].id                                         = cudaLaunchAttributeProgrammaticStreamSerialization;
    pdl[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.stream   = stream;
    cfg.attrs    = pdl;
    cfg.numAttrs = 1;

    cfg.gridDim  = dim3((K / 32 + 7) / 8, BS_MMSQ_MAX_COLS);
    cfg.blockDim = dim3(32, 8);
    cudaLaunchKernelEx(&cfg, bs_mmsq2_quantize, x, ld_x, ncols, K, yq, yd);

    const int kps = (nkb + nsplit - 1) / nsplit;
    cfg.gridDim          = dim3((unsigned) (nrows / (16 * NW)), (unsigned) ((nkb + kps - 1) / kps));
    cfg.blockDim         = dim3(32, NW);
    cfg.dynamicSmemBytes = (size_t) kps * BS_MMSQ2_SMEM_PER_KB;
    const unsigned nsplits = cfg.gridDim.y;
    const uint8_t * w = (const uint8_t *) W;
#define BS_LAUNCH(KERNEL)                                                                                  \
    cudaLaunchKernelEx(&cfg, KERNEL, w, row_bytes, nkb, kps, (const int8_t *) yq, (const float2 *) yd, dst, \
                       ld_dst, part, nrows, ncols)
    if (type == BS_MMSQ_Q4_K) {
        ncols <= 8 ? BS_LAUNCH((bs_mmsq2_q4_K<NW, 1>)) : BS_LAUNCH((bs_mmsq2_q4_K<NW, 2>));
    } else if (type == BS_MMSQ_Q8_0) {
        ncols <= 8 ? BS_LAUNCH((bs_mmsq2_q8_0<NW, 1>)) : BS_LAUNCH((bs_mmsq2_q8_0<NW, 2>));
    } else {
        ncols <= 8 ? BS_LAUNCH((bs_mmsq2_q6_K<NW, 1>)) : BS_LAUNCH((bs_mmsq2_q6_K<NW, 2>));
    }
#undef BS_LAUNCH
    if (nsplits > 1) {
        cfg.gridDim          = dim3((unsigned) ((nrows + 255) / 256), (unsigned) ncols);
        cfg.blockDim         = dim3(256);
        cfg.dynamicSmemBytes = 0;
        cudaLaunchKernelEx(&cfg, bs_mmsq2_sum_splits, (const float *) part, (int) nsplits, nrows, ncols, dst, ld_dst);
    }
}
