// blockspec small-batch quantized matrix multiplication ("mmsq") for ggml-cuda: common parts.
//
// Why: a speculative verify multiplies every weight matrix by 2-16 token columns. ggml-cuda does
// that with mmvq (<= 8 columns: it decodes each quantized block again for every column and reads
// the activations from memory per row) or mmq (tiles sized for prefill; too few blocks at 16
// columns). On an H100 a 16-column batch of a Q4_K_M 8B model cost 1.75-1.9 plain decode steps
// although the weights are read once.
//
// How (bs-mmsq2.cuh, bs-mmsq3.cuh): the activations are quantized to int8 (per 32 values, like
// ggml's q8_1) in tensor-core fragment order; a block copies the part of K it covers into shared
// memory; each warp owns 16 rows, unpacks each super-block of its rows into int8 A fragments and
// multiplies them by all (up to 16) columns with mma.sync (m16n8k32 for 32-value sub-blocks,
// m16n8k16 for Q6_K's 16-value ones); int32 results are scaled per sub-block and summed in fp32.
// K may be split over blocks; the partial sums are then added by a second kernel in a fixed order,
// so results do not depend on timing. Inside a sub-block the order of the products does not
// matter, so thread t of a quad takes 8 consecutive bytes (one load) and the activations use the
// same permutation.
//
// Checked against ggml's own CPU quantizer and dequantizer by test-mmsq.cu. Needs sm_80+ (int8
// mma.sync; the launches use sm_90's programmatic dependent launch where available). Rows must be
// a multiple of 64 and K a multiple of 256.
#pragma once

#include <cuda_fp16.h>
#include <cstdint>

#define BS_MMSQ_MAX_COLS 16

enum bs_mmsq_type { BS_MMSQ_Q4_K, BS_MMSQ_Q6_K, BS_MMSQ_Q8_0 };

static __device__ __forceinline__ void bs_mma_k32(int (&c)[4], const int a0, const int a1, const int a2,
                                                  const int a3, const int b0, const int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    c[0] = c[1] = c[2] = c[3] = 0;
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void) a0; (void) a1; (void) a2; (void) a3; (void) b0; (void) b1;
    c[0] = c[1] = c[2] = c[3] = 0;
    __trap();
#endif
}

static __device__ __forceinline__ void bs_mma_k16(int (&c)[4], const int a0, const int a1, const int b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    c[0] = c[1] = c[2] = c[3] = 0;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
#else
    (void) a0; (void) a1; (void) b0;
    c[0] = c[1] = c[2] = c[3] = 0;
    __trap();
#endif
}

// 32-bit values from 2-byte aligned global memory (Q6_K and Q8_0 blocks), as two 16-bit halves.
static __device__ __forceinline__ int bs_ld_b2(const uint8_t * p) {
    const uint16_t * p16 = (const uint16_t *) p;
    return (int) ((uint32_t) __ldg(p16) | ((uint32_t) __ldg(p16 + 1) << 16));
}
