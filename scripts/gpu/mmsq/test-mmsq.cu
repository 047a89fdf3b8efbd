// Standalone check and timing of bs-mmsq.cuh on a CUDA GPU (no ggml-cuda build needed).
// Weights are random floats quantized by ggml's own CPU code (ggml-quants.c from the vendored
// source, linked in), and the reference product uses ggml's dequantize_row_* on the CPU, so the
// kernel is checked against code we did not write. Build and run: scripts/gpu/mmsq/run-test.sh.
#include "bs-mmsq.cuh"
#include "bs-mmsq3.cuh"

#include <cuda_runtime.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ggml.h"
#include "ggml-quants.h"
extern "C" {
// The few ggml.c symbols ggml-quants.c refers to.
void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt);
    abort();
}
size_t ggml_type_size(enum ggml_type type) {
    return type == GGML_TYPE_Q4_K ? 144 : type == GGML_TYPE_Q6_K ? 210 : type == GGML_TYPE_Q8_0 ? 34 : 0;
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) {
    return ggml_type_size(type) * (size_t) (ne / (type == GGML_TYPE_Q8_0 ? 32 : 256));
}
const char * ggml_type_name(enum ggml_type type) {
    return type == GGML_TYPE_Q4_K ? "q4_K" : type == GGML_TYPE_Q6_K ? "q6_K" : "q8_0";
}
}

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

// One way of computing dst = W x (quantizing x first), with its scratch.
typedef void (*cfg_fn)(bs_mmsq_type, const void *, int64_t, int64_t, int, const float *, int, void *, float *,
                       cudaStream_t);

static int g_nsm = 132;

template <int NW, int SPLIT>   // SPLIT 0: bs_mmsq2_splits decides
static void run_v2(bs_mmsq_type type, const void * W, int64_t nrows, int64_t row_bytes, int nkb, const float * x,
                   int ncols, void * scratch, float * dst, cudaStream_t st) {
    int s = SPLIT ? SPLIT : bs_mmsq2_splits(nrows, nkb, NW, g_nsm);
    while ((nkb + s - 1) / s > 8) s *= 2;   // shared memory holds at most 8 super-blocks
    bs_mmsq2_launch<NW>(type, W, nrows, row_bytes, nkb, x, nkb * 256, ncols, dst, nrows, scratch, s, st);
}

template <int NW, int S, int SPLIT, int KPS_MAX>   // SPLIT 0: bs_mmsq2_splits decides
static void run_v3(bs_mmsq_type type, const void * W, int64_t nrows, int64_t row_bytes, int nkb, const float * x,
                   int ncols, void * scratch, float * dst, cudaStream_t st) {
    int s = SPLIT ? SPLIT : bs_mmsq2_splits(nrows, nkb, NW, g_nsm);
    while ((nkb + s - 1) / s > KPS_MAX) s *= 2;
    bs_mmsq3_launch<NW, S>(type, W, nrows, row_bytes, nkb, x, nkb * 256, ncols, dst, nrows, scratch, s, st);
}

struct Cfg {
    const char * name;
    cfg_fn fn;
    int row_multiple;
};

int main(int argc, char ** argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 50;
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Cfg cfgs[] = {
        // v2_4_auto: what libbs-mmsq.so runs for Q4_K and Q6_K; v3_2_3_k4: its Q8_0 configuration.
        {"v2_4_auto", run_v2<4, 0>, 64},          {"v2_4_s4", run_v2<4, 4>, 64},
        {"v3_2_3_k4", run_v3<2, 3, 0, 4>, 32},    {"v3_4_3_auto", run_v3<4, 3, 0, 8>, 64},
        {"v3_4_4_auto", run_v3<4, 4, 0, 8>, 64},
    };
    {
        int dev = 0;
        CK(cudaDeviceGetAttribute(&g_nsm, cudaDevAttrMultiProcessorCount, dev));
    }
    struct Shape {
        bs_mmsq_type type;
        int64_t nrows;
        int K;
    } shapes[] = {
        // Qwen3-8B Q4_K_M: q/o, k/v, gate/up, down; Q6_K v, down, output; the Q8_0 drafter's layers.
        {BS_MMSQ_Q4_K, 4096, 4096},  {BS_MMSQ_Q4_K, 1024, 4096},  {BS_MMSQ_Q4_K, 12288, 4096},
        {BS_MMSQ_Q4_K, 4096, 12288}, {BS_MMSQ_Q6_K, 1024, 4096},  {BS_MMSQ_Q6_K, 4096, 12288},
        {BS_MMSQ_Q6_K, 151936, 4096}, {BS_MMSQ_Q8_0, 4096, 4096}, {BS_MMSQ_Q8_0, 1024, 4096},
        {BS_MMSQ_Q8_0, 12288, 4096}, {BS_MMSQ_Q8_0, 4096, 12288},
    };
    int bad = 0;
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (const Shape & sh : shapes) {
        const int K = sh.K, nkb = K / 256;
        const ggml_type gt = sh.type == BS_MMSQ_Q4_K   ? GGML_TYPE_Q4_K
                             : sh.type == BS_MMSQ_Q6_K ? GGML_TYPE_Q6_K
                                                       : GGML_TYPE_Q8_0;
        const int64_t row_bytes = (int64_t) ggml_row_size(gt, K);
        // Random weights, quantized by ggml. Rows with different scales, like real layers.
        // At most 4096 distinct rows (quantizing the 151936-row output matrix on the CPU takes
        // too long); larger matrices repeat them.
        const int64_t nbase = std::min<int64_t>(sh.nrows, 4096);
        std::vector<float> wf((size_t) nbase * K);
        for (int64_t r = 0; r < nbase; ++r) {
            const float s = 0.01f + 0.04f * (float) (r % 7) / 7.0f;
            for (int k = 0; k < K; ++k) wf[(size_t) r * K + k] = s * nd(rng);
        }
        std::vector<uint8_t> wq((size_t) sh.nrows * row_bytes);
        if (gt == GGML_TYPE_Q4_K) {
            quantize_q4_K(wf.data(), wq.data(), nbase, K, nullptr);
        } else if (gt == GGML_TYPE_Q6_K) {
            quantize_q6_K(wf.data(), wq.data(), nbase, K, nullptr);
        } else {
            quantize_q8_0(wf.data(), wq.data(), nbase, K, nullptr);
        }
        for (int64_t r = nbase; r < sh.nrows; ++r) {
            memcpy(wq.data() + r * row_bytes, wq.data() + (r % nbase) * row_bytes, row_bytes);
        }
        // Dequantized reference weights (ggml's CPU code).
        std::vector<float> wd((size_t) nbase * K);
        for (int64_t r = 0; r < nbase; ++r) {
            if (gt == GGML_TYPE_Q4_K) {
                dequantize_row_q4_K((const block_q4_K *) (wq.data() + r * row_bytes), wd.data() + (size_t) r * K, K);
            } else if (gt == GGML_TYPE_Q6_K) {
                dequantize_row_q6_K((const block_q6_K *) (wq.data() + r * row_bytes), wd.data() + (size_t) r * K, K);
            } else {
                dequantize_row_q8_0((const block_q8_0 *) (wq.data() + r * row_bytes), wd.data() + (size_t) r * K, K);
            }
        }
        std::vector<float> xf((size_t) BS_MMSQ_MAX_COLS * K);
        for (auto & v : xf) v = nd(rng);

        // Enough copies of the weights that they do not stay in the 50 MB L2 between calls.
        const size_t wbytes = wq.size();
        const int ncopies = (int) std::max<size_t>(1, (size_t) 400e6 / wbytes);
        uint8_t * dW;
        CK(cudaMalloc(&dW, wbytes * ncopies + 256));   // Q6_K copies read up to 6 bytes past a block
        for (int c = 0; c < ncopies; ++c) CK(cudaMemcpy(dW + c * wbytes, wq.data(), wbytes, cudaMemcpyHostToDevice));
        float *dx, *ddst;
        void * dscratch;
        CK(cudaMalloc(&dx, xf.size() * 4));
        CK(cudaMemcpy(dx, xf.data(), xf.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&ddst, (size_t) sh.nrows * BS_MMSQ_MAX_COLS * 4));
        CK(cudaMalloc(&dscratch, bs_mmsq2_scratch(K, sh.nrows, 64) + (size_t) BS_MMSQ_MAX_COLS * K * 2));
        // The activations as both kernels quantize them (d = amax / 127, q = round-half-even(x / d)),
        // computed here: the reference below uses them, so the kernels' own quantizers are checked too.
        std::vector<int8_t> hq((size_t) BS_MMSQ_MAX_COLS * K);
        std::vector<float> hd((size_t) BS_MMSQ_MAX_COLS * (K / 32));
        for (int c = 0; c < BS_MMSQ_MAX_COLS; ++c)
            for (int b = 0; b < K / 32; ++b) {
                float amax = 0;
                for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xf[(size_t) c * K + b * 32 + i]));
                const float d = amax / 127.0f;
                hd[(size_t) c * (K / 32) + b] = d;
                for (int i = 0; i < 32; ++i)
                    hq[(size_t) c * K + b * 32 + i] =
                        amax == 0 ? 0 : (int8_t) std::nearbyint(xf[(size_t) c * K + b * 32 + i] / d);
            }

        // Memory-bandwidth yardstick: a device copy of the same bytes.
        uint8_t * dcopy;
        CK(cudaMalloc(&dcopy, wbytes));
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < reps; ++i)
            CK(cudaMemcpyAsync(dcopy, dW + (i % ncopies) * wbytes, wbytes, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms_copy;
        CK(cudaEventElapsedTime(&ms_copy, e0, e1));
        const double copy_us = 1e3 * ms_copy / reps;
        printf("\n%s rows %ld K %d: %.2f MB, device copy (read+write) %.1f us\n",
               ggml_type_name(gt), (long) sh.nrows, K, wbytes / 1e6, copy_us);
        CK(cudaFree(dcopy));

        for (const Cfg & cfg : cfgs) {
            if (sh.nrows % cfg.row_multiple != 0) continue;
            printf("  %-11s", cfg.name);
            for (int ncols : {1, 2, 4, 8, 9, 12, 16}) {
                CK(cudaMemset(ddst, 0, (size_t) sh.nrows * BS_MMSQ_MAX_COLS * 4));
                cfg.fn(sh.type, dW, sh.nrows, row_bytes, nkb, dx, ncols, dscratch, ddst, st);
                CK(cudaStreamSynchronize(st));
                CK(cudaGetLastError());
                // Check against the CPU: the same q8 activations the kernel used, ggml's dequantized weights.
                std::vector<float> out((size_t) sh.nrows * BS_MMSQ_MAX_COLS);
                CK(cudaMemcpy(out.data(), ddst, out.size() * 4, cudaMemcpyDeviceToHost));
                double max_err = 0, max_ref = 0, max_err_x = 0;
                const int64_t check_rows = std::min<int64_t>(sh.nrows, 256);
                for (int c = 0; c < ncols; ++c) {
                    for (int64_t r = 0; r < check_rows; ++r) {
                        const int64_t rr = (r * 7919) % sh.nrows, rb = rr % nbase;
                        double ref = 0, ref_x = 0;
                        for (int k = 0; k < K; ++k) {
                            const double xq = (double) hd[(size_t) c * (K / 32) + k / 32] * hq[(size_t) c * K + k];
                            ref += (double) wd[(size_t) rb * K + k] * xq;
                            ref_x += (double) wd[(size_t) rb * K + k] * xf[(size_t) c * K + k];
                        }
                        const double o = out[(size_t) c * sh.nrows + rr];
                        max_err = std::max(max_err, std::fabs(o - ref));
                        max_err_x = std::max(max_err_x, std::fabs(o - ref_x));
                        max_ref = std::max(max_ref, std::fabs(ref));
                    }
                    // Columns past ncols must stay untouched (zero).
                    for (int64_t r = 0; r < sh.nrows && c == ncols - 1 && ncols < BS_MMSQ_MAX_COLS; ++r) {
                        if (out[(size_t) ncols * sh.nrows + r] != 0.0f) {
                            printf(" [wrote column %d]", ncols);
                            bad++;
                            break;
                        }
                    }
                }
                const double rel = max_err / max_ref, rel_x = max_err_x / max_ref;
                const bool ok = rel < 2e-5 && rel_x < 2e-2;
                bad += !ok;
                // Timed as ggml runs it: the calls captured in one CUDA graph, so launch costs are
                // the GPU's, not this CPU's.
                cudaGraph_t graph;
                cudaGraphExec_t exec;
                CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
                for (int i = 0; i < reps; ++i)
                    cfg.fn(sh.type, dW + (i % ncopies) * wbytes, sh.nrows, row_bytes, nkb, dx, ncols, dscratch, ddst,
                           st);
                CK(cudaStreamEndCapture(st, &graph));
                CK(cudaGraphInstantiate(&exec, graph, 0));
                CK(cudaGraphLaunch(exec, st));   // warm-up
                CK(cudaEventRecord(e0, st));
                CK(cudaGraphLaunch(exec, st));
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                CK(cudaGraphExecDestroy(exec));
                CK(cudaGraphDestroy(graph));
                const double us = 1e3 * ms / reps;
                printf(" | n%-2d %7.1fus %5.0fGB/s%s", ncols, us, wbytes / us / 1e3, ok ? "" : " BAD");
                if (!ok) printf("(rel %.2e rel_x %.2e)", rel, rel_x);
            }
            printf("\n");
            fflush(stdout);
        }
        CK(cudaFree(dW));
        CK(cudaFree(dx));
        CK(cudaFree(ddst));
        CK(cudaFree(dscratch));
    }
    printf("\n%s: %d bad results\n", bad ? "FAIL" : "OK", bad);
    return bad ? 1 : 0;
}
