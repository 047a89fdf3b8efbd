// libbs-mmsq.so: the kernels of bs-mmsq2.cuh and bs-mmsq3.cuh behind the two C functions that the
// hook in our patched ggml-cuda (patch-ggml-cuda.py) looks up with dlopen(BLOCKSPEC_MMSQ_LIB).
// Keeping them out of libggml-cuda.so means a kernel change rebuilds this file (seconds, even on a
// machine without a GPU: build.sh) instead of ggml's whole CUDA backend (minutes).
//
// Environment (read once):
//   BLOCKSPEC_MMSQ_Q8=v2        Q8_0 through version 2's kernel (default: version 3)
//   BLOCKSPEC_MMSQ_COLS=lo,hi   use the kernels for lo..hi columns (default 4,16); other column
//                               counts stay with ggml's own kernels
#include "bs-mmsq3.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>

// ggml_type values of the formats handled here (ggml.h; stable across versions).
static constexpr int GGML_Q4_K = 12;
static constexpr int GGML_Q6_K = 14;
static constexpr int GGML_Q8_0 = 8;

namespace {

struct Settings {
    int lo = 4, hi = 16;   // 2-3 columns: ggml's mmvq measured faster in the real graph
    int nsm = 0;   // streaming multiprocessors of the device (sizes the K split)
    bool q8_v3 = true;   // BLOCKSPEC_MMSQ_Q8=v2: Q8_0 through version 2
};

constexpr int NW = 4;   // warps per block (16 rows each); test-mmsq's best on the H100

const Settings & settings() {
    static Settings s = [] {
        Settings v;
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v.nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            v.nsm = 0;   // no device: supported() declines everything
        }
        if (const char * e = getenv("BLOCKSPEC_MMSQ_Q8")) {
            v.q8_v3 = strcmp(e, "v2") != 0;
        }
        if (const char * e = getenv("BLOCKSPEC_MMSQ_COLS")) {
            int lo = 0, hi = 0;
            if (sscanf(e, "%d,%d", &lo, &hi) == 2 && lo >= 1 && hi <= BS_MMSQ_MAX_COLS && lo <= hi) {
                v.lo = lo;
                v.hi = hi;
            } else {
                fprintf(stderr, "BLOCKSPEC_MMSQ_COLS=%s: expected lo,hi with 1 <= lo <= hi <= 16; using 4,16\n", e);
            }
        }
        return v;
    }();
    return s;
}

bool supported(int type, int64_t K, int64_t nrows, int64_t ncols) {
    const Settings & s = settings();
    return s.nsm > 0 && (type == GGML_Q4_K || type == GGML_Q6_K || type == GGML_Q8_0) && K % 256 == 0 && K <= (1 << 20) &&
           nrows % (16 * NW) == 0 && ncols >= s.lo && ncols <= s.hi;
}

bool use_v3(int type) {
    return type == GGML_Q8_0 && settings().q8_v3;
}

// K splits of a product; the scratch size and the launch must agree on it.
int splits(int type, int64_t K, int64_t nrows) {
    int nsplit = bs_mmsq2_splits(nrows, (int) (K / 256), NW, settings().nsm);
    if (use_v3(type)) {   // version 3 holds at most 4 super-blocks of activations (see below)
        while ((K / 256 + nsplit - 1) / nsplit > 4) {
            nsplit *= 2;
        }
    }
    return nsplit;
}

}  // namespace

extern "C" {

// Bytes of device scratch bs_mmsq_mul_mat needs (quantized activations), or 0 if this shape is
// not handled here (the caller then uses its own kernels).
size_t bs_mmsq_scratch_bytes(int type, int64_t K, int64_t nrows, int64_t ncols) {
    if (!supported(type, K, nrows, ncols)) {
        return 0;
    }
    return bs_mmsq2_scratch(K, nrows, splits(type, K, nrows));
}

// dst[c * ld_dst + r] = sum_k W[r, k] * x[c * ld_x + k] for r < nrows, c < ncols. W: nrows rows
// of row_bytes (ggml's Q4_K or Q6_K blocks). Asynchronous on `stream`; returns false (nothing
// launched) if the shape is not handled.
bool bs_mmsq_mul_mat(int type, const void * W, int64_t nrows, int64_t K, int64_t row_bytes, const float * x,
                     int64_t ld_x, int64_t ncols, float * dst, int64_t ld_dst, void * scratch, cudaStream_t stream) {
    if (!supported(type, K, nrows, ncols)) {
        return false;
    }
    const bs_mmsq_type t = type == GGML_Q4_K ? BS_MMSQ_Q4_K : type == GGML_Q6_K ? BS_MMSQ_Q6_K : BS_MMSQ_Q8_0;
    // The kernels read Q4_K and Q8_0 blocks in 16-byte units (a view into a weight could be
    // misaligned) and Q6_K blocks in 2-byte units; anything else stays with ggml.
    const uintptr_t align = t == BS_MMSQ_Q6_K ? 2 : 16;
    if ((uintptr_t) W % align != 0 || (uintptr_t) row_bytes % align != 0) {
        return false;
    }
    // test-mmsq on the H100: Q8_0 gains most from version 3's cp.async pipeline (1.5-1.8 TB/s vs
    // 1.0-1.1 at 16 columns); for Q4_K and Q6_K version 2 measured as fast or faster.
    // Version 3 is kept under 48 KB of shared memory (2 warps, 3 stages, at most 4 super-blocks of
    // activations per block): with more, a CUDA graph update in ggml failed when verify lengths
    // changed (H100, replay bench).
    const int nsplit = splits(type, K, nrows);
    if (use_v3(type)) {
        static_assert(bs_mmsq3_smem<BS_MMSQ_Q8_0, 2, 3>(4) <= 48 * 1024, "v3 must fit the default shared memory");
        bs_mmsq3_launch<2, 3>(t, W, nrows, row_bytes, (int) (K / 256), x, ld_x, (int) ncols, dst, ld_dst, scratch,
                              nsplit, stream);
    } else {
        bs_mmsq2_launch<NW>(t, W, nrows, row_bytes, (int) (K / 256), x, ld_x, (int) ncols, dst, ld_dst, scratch,
                            nsplit, stream);
    }
    return cudaPeekAtLastError() == cudaSuccess;
}

}  // extern "C"
