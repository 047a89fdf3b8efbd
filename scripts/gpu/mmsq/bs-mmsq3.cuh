// Version 3: like version 2 (bs-mmsq2.cuh: fragment-ordered activations in shared memory, one
// 16-row tile per warp), but the weights travel through shared memory too, with cp.async in a
// pipeline of S stages per warp: S-1 super-blocks of the warp's rows are in flight while it
// multiplies the current one, without holding registers, so the kernel keeps more bytes in flight
// per SM than version 2 (whose one-ahead register prefetch left it latency-bound at ~1.3 TB/s).
#pragma once

#include "bs-mmsq2.cuh"

template <int BYTES>
static __device__ __forceinline__ void bs_cp_async(void * smem, const void * gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned) __cvta_generic_to_shared(smem);
    if constexpr (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(gmem), "n"(BYTES) : "memory");
    }
#endif
}

static __device__ __forceinline__ void bs_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

template <int N>
static __device__ __forceinline__ void bs_cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// Per format: bytes of one row's super-block (256 values), the copy unit (16 bytes where the
// blocks are 16-byte aligned; Q6_K's 210-byte blocks are only 2-byte aligned, so 4-byte units
// from the 4-byte boundary below, 216 bytes), and the row stride in a shared-memory stage.
template <bs_mmsq_type T> struct bs_fmt;
template <> struct bs_fmt<BS_MMSQ_Q4_K> { static constexpr int BYTES = 144, UNIT = 16, STRIDE = 144; };
template <> struct bs_fmt<BS_MMSQ_Q8_0> { static constexpr int BYTES = 272, UNIT = 16, STRIDE = 272; };
template <> struct bs_fmt<BS_MMSQ_Q6_K> { static constexpr int BYTES = 210, UNIT = 4, STRIDE = 216; };

// One warp copies super-block kb of its 16 rows into a stage.
template <bs_mmsq_type T>
static __device__ __forceinline__ void bs_stage_copy(uint8_t * stage, const uint8_t * __restrict__ W,
                                                     int64_t row_bytes, int64_t row0, int kb, int lane) {
    using F = bs_fmt<T>;
    constexpr int PER_ROW = F::STRIDE / F::UNIT;
#pragma unroll
    for (int i = lane; i < 16 * PER_ROW; i += 32) {
        const int r = i / PER_ROW, c = i % PER_ROW;
        const uint8_t * src = W + (row0 + r) * row_bytes + (int64_t) kb * F::BYTES;
        if constexpr (F::UNIT == 4) {
            src = (const uint8_t *) ((uintptr_t) src & ~(uintptr_t) 3);
        }
        bs_cp_async<F::UNIT>(stage + r * F::STRIDE + c * F::UNIT, src + c * F::UNIT);
    }
}

// 16-bit halves from shared memory (Q6_K and Q8_0 blocks are only 2-byte aligned).
static __device__ __forceinline__ int bs_sm_b2(const uint8_t * p) {
    const uint16_t * p16 = (const uint16_t *) p;
    return (int) ((uint32_t) p16[0] | ((uint32_t) p16[1] << 16));
}

// Multiply one super-block (rows g, g+8 at r0, r1 in shared memory) into acc.
template <int NT>
static __device__ __forceinline__ void bs_q4k_mul(const uint8_t * r0, const uint8_t * r1, const int2 * sq,
                                                  const float4 * sd, int k, int lane, float (&acc)[NT][4]) {
    const int t = lane & 3;
    const uint4 h0 = *(const uint4 *) r0, h1 = *(const uint4 *) r1;
    float dsc[2][8], dmn[2][8];
    bs_q4k_scales_from(h0, dsc[0], dmn[0]);
    bs_q4k_scales_from(h1, dsc[1], dmn[1]);
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        const uint2 q0 = *(const uint2 *) (r0 + 16 + 32 * p + 8 * t);
        const uint2 q1 = *(const uint2 *) (r1 + 16 + 32 * p + 8 * t);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int sb = 2 * p + h, sh = 4 * h;
            const int a0 = (q0.x >> sh) & 0x0F0F0F0F, a2 = (q0.y >> sh) & 0x0F0F0F0F;
            const int a1 = (q1.x >> sh) & 0x0F0F0F0F, a3 = (q1.y >> sh) & 0x0F0F0F0F;
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const int2   b  = sq[((k * 8 + sb) * 2 + n) * 32 + lane];
                const float4 ys = sd[((k * 8 + sb) * 2 + n) * 4 + t];
                int c[4];
                bs_mma_k32(c, a0, a1, a2, a3, b.x, b.y);
                acc[n][0] += dsc[0][sb] * ys.x * (float) c[0] - dmn[0][sb] * ys.y;
                acc[n][1] += dsc[0][sb] * ys.z * (float) c[1] - dmn[0][sb] * ys.w;
                acc[n][2] += dsc[1][sb] * ys.x * (float) c[2] - dmn[1][sb] * ys.y;
                acc[n][3] += dsc[1][sb] * ys.z * (float) c[3] - dmn[1][sb] * ys.w;
            }
        }
    }
}

template <int NT>
static __device__ __forceinline__ void bs_q80_mul(const uint8_t * r0, const uint8_t * r1, const int2 * sq,
                                                  const float4 * sd, int k, int lane, float (&acc)[NT][4]) {
    const int t = lane & 3;
#pragma unroll
    for (int sb = 0; sb < 8; ++sb) {
        const uint8_t * b0 = r0 + 34 * sb;
        const uint8_t * b1 = r1 + 34 * sb;
        const float d0 = __half2float(*(const half *) b0), d1 = __half2float(*(const half *) b1);
        const int a0 = bs_sm_b2(b0 + 2 + 8 * t), a2 = bs_sm_b2(b0 + 6 + 8 * t);
        const int a1 = bs_sm_b2(b1 + 2 + 8 * t), a3 = bs_sm_b2(b1 + 6 + 8 * t);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const int2   b  = sq[((k * 8 + sb) * 2 + n) * 32 + lane];
            const float4 ys = sd[((k * 8 + sb) * 2 + n) * 4 + t];
            int c[4];
            bs_mma_k32(c, a0, a1, a2, a3, b.x, b.y);
            acc[n][0] += d0 * ys.x * (float) c[0];
            acc[n][1] += d0 * ys.z * (float) c[1];
            acc[n][2] += d1 * ys.x * (float) c[2];
            acc[n][3] += d1 * ys.z * (float) c[3];
        }
    }
}

template <int NT>
static __device__ __forceinline__ void bs_q6k_mul(const uint8_t * r0, const uint8_t * r1, const int2 * sq2,
                                                  const float4 * sd, int k, int lane, float (&acc)[NT][4]) {
    const int g = lane >> 2, t = lane & 3;
    const int * sq = (const int *) sq2;
    const uint8_t * rr[2] = {r0, r1};
    float dsc[2][16];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float d = __half2float(*(const half *) (rr[r] + 208));
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            dsc[r][i] = d * (float) (int8_t) rr[r][192 + i];
        }
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            int ql_lo[2], ql_hi[2], qh[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                ql_lo[r] = bs_sm_b2(rr[r] + 64 * hf + 16 * s + 4 * t);
                ql_hi[r] = bs_sm_b2(rr[r] + 64 * hf + 32 + 16 * s + 4 * t);
                qh[r]    = bs_sm_b2(rr[r] + 128 + 32 * hf + 16 * s + 4 * t);
            }
#pragma unroll
            for (int p = 0; p < 4; ++p) {
                int a[2];
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int lo = (p & 1) ? ql_hi[r] : ql_lo[r];
                    const int v  = ((lo >> (4 * (p >> 1))) & 0x0F0F0F0F) | (((qh[r] >> (2 * p)) << 4) & 0x30303030);
                    a[r] = __vsubss4(v, 0x20202020);
                }
                const int sci = 8 * hf + s + 2 * p;
                const int sb  = 4 * hf + p;
#pragma unroll
                for (int n = 0; n < NT; ++n) {
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
        }
}

// Shared memory: activations of kps super-blocks, then NW warps x S stages x 16 rows.
template <bs_mmsq_type T, int NW, int S>
static constexpr size_t bs_mmsq3_smem(int kps) {
    return (size_t) kps * BS_MMSQ2_SMEM_PER_KB + (size_t) NW * S * 16 * bs_fmt<T>::STRIDE;
}

template <bs_mmsq_type T, int NW, int NT, int S>
static __global__ void __launch_bounds__(NW * 32)
bs_mmsq3(const uint8_t * __restrict__ W, int64_t row_bytes, int nkb, int kps, const int8_t * __restrict__ yq,
         const float2 * __restrict__ yd, float * __restrict__ dst, int64_t ld_dst, float * __restrict__ part,
         int64_t nrows, int ncols) {
    using F = bs_fmt<T>;
    extern __shared__ __align__(16) uint8_t sm[];
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int g = lane >> 2;
    const int kb0 = blockIdx.y * kps;
    const int nk  = min(kps, nkb - kb0);
    const int64_t row0 = ((int64_t) blockIdx.x * NW + warp) * 16;
    uint8_t * stages = sm + (size_t) kps * BS_MMSQ2_SMEM_PER_KB + (size_t) warp * S * 16 * F::STRIDE;

    // Weights do not depend on the kernel before: start their copies before waiting for it.
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < nk) {
            bs_stage_copy<T>(stages + s * 16 * F::STRIDE, W, row_bytes, row0, kb0 + s, lane);
        }
        bs_cp_async_commit();
    }
    bs_grid_dependency_wait();
    bs_mmsq2_fill(sm, yq, yd, kb0, nk);
    __syncthreads();
    const int2   * sq = (const int2 *) sm;
    const float4 * sd = (const float4 *) (sm + nk * BS_MMSQ2_Q_PER_KB);

    float acc[NT][4] = {};
    for (int k = 0; k < nk; ++k) {
        bs_cp_async_wait<S - 2>();
        __syncwarp();
        const uint8_t * st = stages + (k % S) * 16 * F::STRIDE;
        const uint8_t * r0 = st + g * F::STRIDE;
        const uint8_t * r1 = st + (g + 8) * F::STRIDE;
        if constexpr (T == BS_MMSQ_Q4_K) {
            bs_q4k_mul<NT>(r0, r1, sq, sd, k, lane, acc);
        } else if constexpr (T == BS_MMSQ_Q8_0) {
            bs_q80_mul<NT>(r0, r1, sq, sd, k, lane, acc);
        } else {
            // The copy started at the 4-byte boundary below each block.
            const int64_t off0 = ((row0 + g) * row_bytes + (int64_t) (kb0 + k) * 210) & 3;
            const int64_t off1 = ((row0 + g + 8) * row_bytes + (int64_t) (kb0 + k) * 210) & 3;
            bs_q6k_mul<NT>(r0 + off0, r1 + off1, sq, sd, k, lane, acc);
        }
        __syncwarp();   // every lane is done with the stage that the next copy overwrites
        if (k + S - 1 < nk) {
            bs_stage_copy<T>(stages + ((k + S - 1) % S) * 16 * F::STRIDE, W, row_bytes, row0, kb0 + k + S - 1, lane);
        }
        bs_cp_async_commit();
    }
    bs_mmsq2_store<NW, NT>(acc, dst, ld_dst, part, nrows, ncols, row0);
}

// Like bs_mmsq2_launch (same scratch, splits and PDL), with version 3's matrix kernel.
template <int NW, int S>
static void bs_mmsq3_launch(bs_mmsq_type type, const void * W, int64_t nrows, int64_t row_bytes, int nkb,
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
    cfg.gridDim  = dim3((unsigned) (nrows / (16 * NW)), (unsigned) ((nkb + kps - 1) / kps));
    cfg.blockDim = dim3(32, NW);
    const unsigned nsplits = cfg.gridDim.y;
    const uint8_t * w = (const uint8_t *) W;
#define BS_LAUNCH3(TYPE, NT)                                                                                  \
    do {                                                                                                      \
        auto kern = bs_mmsq3<TYPE, NW, NT, S>;                                                                \
        cfg.dynamicSmemBytes = bs_mmsq3_smem<TYPE, NW, S>(kps);                                               \
        if (cfg.dynamicSmemBytes > 48 * 1024) {                                                               \
            cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) cfg.dynamicSmemBytes); \
        }                                                                                                     \
        cudaLaunchKernelEx(&cfg, kern, w, row_bytes, nkb, kps, (const int8_t *) yq, (const float2 *) yd, dst, \
                           ld_dst, part, nrows, ncols);                                                       \
    } while (0)
    if (type == BS_MMSQ_Q4_K) {
        if (ncols <= 8) BS_LAUNCH3(BS_MMSQ_Q4_K, 1); else BS_LAUNCH3(BS_MMSQ_Q4_K, 2);
    } else if (type == BS_MMSQ_Q8_0) {
        if (ncols <= 8) BS_LAUNCH3(BS_MMSQ_Q8_0, 1); else BS_LAUNCH3(BS_MMSQ_Q8_0, 2);
    } else {
        if (ncols <= 8) BS_LAUNCH3(BS_MMSQ_Q6_K, 1); else BS_LAUNCH3(BS_MMSQ_Q6_K, 2);
    }
#undef BS_LAUNCH3
    if (nsplits > 1) {
        cfg.gridDim          = dim3((unsigned) ((nrows + 255) / 256), (unsigned) ncols);
        cfg.blockDim         = dim3(256);
        cfg.dynamicSmemBytes = 0;
        cudaLaunchKernelEx(&cfg, bs_mmsq2_sum_splits, (const float *) part, (int) nsplits, nrows, ncols, dst, ld_dst);
    }
}
