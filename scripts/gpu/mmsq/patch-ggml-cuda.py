#!/usr/bin/env python3
"""Patch a ggml source tree so ggml-cuda can take its small-batch quantized matrix products from
libbs-mmsq.so (scripts/gpu/mmsq/bs-mmsq-lib.cu).

    python3 scripts/gpu/mmsq/patch-ggml-cuda.py GGML_DIR

The hook is inert unless BLOCKSPEC_MMSQ_LIB names the library at run time: then, in
ggml_cuda_mul_mat, before ggml's own mmvq/mmq choice, a plain 2-D product of a contiguous
quantized matrix with f32 columns is offered to the library, which either launches its kernels on
ggml's stream (scratch from ggml's memory pool, so CUDA graph capture works) or declines. Exits
non-zero if the source does not look as expected, so a ggml update cannot silently drop the hook.
"""
import pathlib
import sys

MARK = "// blockspec mmsq hook"

HOOK = r'''
// blockspec mmsq hook: small-batch quantized products from an external library (blockspec's
// scripts/gpu/mmsq). Inert unless BLOCKSPEC_MMSQ_LIB names it.
#include <dlfcn.h>
typedef size_t (*bs_mmsq_scratch_fn)(int type, int64_t K, int64_t nrows, int64_t ncols);
typedef bool (*bs_mmsq_run_fn)(int type, const void * W, int64_t nrows, int64_t K, int64_t row_bytes,
                               const float * x, int64_t ld_x, int64_t ncols, float * dst, int64_t ld_dst,
                               void * scratch, cudaStream_t stream);
struct bs_mmsq_api {
    bs_mmsq_scratch_fn scratch = nullptr;
    bs_mmsq_run_fn     run     = nullptr;
};
static const bs_mmsq_api & bs_mmsq_get() {
    static const bs_mmsq_api api = [] {
        bs_mmsq_api a;
        const char * path = getenv("BLOCKSPEC_MMSQ_LIB");
        if (path == nullptr || *path == '\0') {
            return a;
        }
        void * h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            GGML_LOG_WARN("blockspec mmsq: cannot load %s: %s\n", path, dlerror());
            return a;
        }
        a.scratch = (bs_mmsq_scratch_fn) dlsym(h, "bs_mmsq_scratch_bytes");
        a.run     = (bs_mmsq_run_fn) dlsym(h, "bs_mmsq_mul_mat");
        if (a.scratch == nullptr || a.run == nullptr) {
            GGML_LOG_WARN("blockspec mmsq: %s lacks bs_mmsq_scratch_bytes/bs_mmsq_mul_mat\n", path);
            a = bs_mmsq_api();
        } else {
            GGML_LOG_INFO("blockspec mmsq: small-batch kernels from %s\n", path);
        }
        return a;
    }();
    return api;
}
static bool bs_mmsq_try(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                        ggml_tensor * dst) {
    const bs_mmsq_api & api = bs_mmsq_get();
    if (api.run == nullptr || src1->type != GGML_TYPE_F32 || dst->type != GGML_TYPE_F32 ||
        !ggml_is_quantized(src0->type)) {
        return false;
    }
    if (src0->ne[2] != 1 || src0->ne[3] != 1 || src1->ne[2] != 1 || src1->ne[3] != 1 ||
        !ggml_is_contiguous(src0) || src1->nb[0] != sizeof(float) || dst->nb[0] != sizeof(float) ||
        src1->nb[1] % sizeof(float) != 0 || dst->nb[1] % sizeof(float) != 0) {
        return false;
    }
    const size_t need = api.scratch((int) src0->type, src0->ne[0], src0->ne[1], src1->ne[1]);
    if (need == 0) {
        return false;
    }
    ggml_cuda_pool_alloc<char> scratch(ctx.pool(), need);
    return api.run((int) src0->type, src0->data, src0->ne[1], src0->ne[0], (int64_t) src0->nb[1],
                   (const float *) src1->data, (int64_t) (src1->nb[1] / sizeof(float)), src1->ne[1],
                   (float *) dst->data, (int64_t) (dst->nb[1] / sizeof(float)), scratch.get(), ctx.stream());
}

'''

DEF_ANCHOR = "static void ggml_cuda_mul_mat(ggml_backend_cuda_context & ctx,"
CALL_ANCHOR = "    if (ggml_cuda_should_use_mmvq(src0->type, cc, ne11)) {\n        ggml_cuda_mul_mat_vec_q(ctx, src0, src1, nullptr, dst);"
CALL = "    if (bs_mmsq_try(ctx, src0, src1, dst)) {  " + MARK + "\n        return;\n    }\n"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = pathlib.Path(sys.argv[1]) / "src" / "ggml-cuda" / "ggml-cuda.cu"
    if not path.is_file():
        print(f"error: {path} not found (GGML_DIR is the folder holding src/ and include/)", file=sys.stderr)
        return 1
    src = path.read_text()
    if MARK in src:
        print(f"{path}: already patched")
        return 0
    if src.count(DEF_ANCHOR) != 1 or src.count(CALL_ANCHOR) != 1:
        print(f"error: {path}: the anchors for the hook were not found exactly once", file=sys.stderr)
        return 1
    src = src.replace(DEF_ANCHOR, HOOK + DEF_ANCHOR)
    src = src.replace(CALL_ANCHOR, CALL + CALL_ANCHOR)
    path.write_text(src)
    print(f"{path}: mmsq hook added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
