/*
device.cu -- the GPU context: device choice, the one stream, cuDNN / cuBLAS / cuBLASLt handles
bound to it, the shared workspace and reduction scratch, the precision policy and the
deterministic switch. Also gpu_fail(), where every failed CUDA/cuBLAS/cuDNN call ends.

Precision policy: in the strict fp32 mode cuBLAS runs CUBLAS_PEDANTIC_MATH (no TF32, no
reduced-precision reductions) and the cuBLASLt/cuDNN code paths pick fp32 compute with no
tensor-core (TF32) engines (gemm.cu, conv_cudnn.cu read g->act). In bf16 mode matrix inputs are
bf16 and accumulation fp32.
*/
#include "gpu_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gpu_sync_after_launch = 0;

void gpu_fail(const char *lib, const char *why, const char *stmt, const char *file, int line,
              const char *func)
{
    fprintf(stderr, "E: %s error \"%s\"\n   in: %s\n   at %s:%d in %s()\n", lib, why, stmt, file,
            line, func);
    if (!strcmp(lib, "cuDNN")) {
        char detail[1024];
        cudnnGetLastErrorString(detail, sizeof detail);     // cuDNN's own account, if any
        if (detail[0]) fprintf(stderr, "   cuDNN says: %s\n", detail);
    }
    if (!gpu_sync_after_launch)
        fprintf(stderr, "   HINT: run with SRM_GPU_SYNC=1 to report asynchronous faults at the "
                        "launch that caused them\n");
    fflush(stderr);
    exit(1);
}

size_t gpu_dtype_size(gpu_dtype_t t) { return t == GPU_F32 ? 4 : 2; }

size_t gpu_cudnn_version(void) { return cudnnGetVersion(); }

gpu_ctx_t *gpu_ctx_new(gpu_cfg_t cfg)
{
    const char *sync = getenv("SRM_GPU_SYNC");
    gpu_sync_after_launch = sync && *sync && *sync != '0';

    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0)
        DIE("no CUDA device usable (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (cfg.device < 0 || cfg.device >= ndev)
        DIE("CUDA device %d requested, %d present", cfg.device, ndev);

    gpu_ctx_t *g = (gpu_ctx_t *)xcalloc(1, sizeof *g);
    g->device = cfg.device;
    g->act = cfg.act;
    g->deterministic = cfg.deterministic;
    CUDA_CHECK(cudaSetDevice(cfg.device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, cfg.device));
    g->sm_count = prop.multiProcessorCount;
    g->max_threads_per_sm = prop.maxThreadsPerMultiProcessor;
    snprintf(g->name, sizeof g->name, "%s", prop.name);
    if (prop.major < 8 && cfg.act == GPU_BF16)
        DIE("bf16 mode needs compute capability >= 8.0; %s is %d.%d", prop.name, prop.major,
            prop.minor);

    CUDA_CHECK(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    CUDNN_CHECK(cudnnCreate(&g->cudnn));
    CUDNN_CHECK(cudnnSetStream(g->cudnn, g->stream));
    CUBLAS_CHECK(cublasCreate(&g->cublas));
    CUBLAS_CHECK(cublasSetStream(g->cublas, g->stream));
    CUBLAS_CHECK(cublasSetMathMode(g->cublas, cfg.act == GPU_F32 ? CUBLAS_PEDANTIC_MATH
                                                                 : CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasLtCreate(&g->lt));

    // The workspace is ours (tracked), also for cuBLAS: without cublasSetWorkspace it would
    // allocate its own, invisible to the peak-memory count.
    gpu_workspace_reserve(g, cfg.workspace_bytes);

    // Reduction scratch: 4 Mi floats (16 MiB) covers 4 chunks per SM x 132 SMs x 768 channels
    // x 3 slots with room to spare; gpu_reduce_chunks() adapts to it.
    g->red_floats = (size_t)4 << 20;
    g->red = (float *)gpu_malloc(g, g->red_floats * sizeof(float), "reduction scratch");

    gpu_conv_cache_init(g);
    gpu_gemm_cache_init(g);
    return g;
}

void gpu_ctx_destroy(gpu_ctx_t **gp)
{
    gpu_ctx_t *g = *gp;
    if (!g) return;
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    gpu_conv_cache_free(g);
    gpu_gemm_cache_free(g);
    gpu_free(g, g->red);
    gpu_free(g, g->ws);
    for (size_t i = 0; i < g->nallocs; i++)
        log_msg('W', "gpu: %zu bytes (%s) still allocated at context destruction; freed",
                g->allocs[i].bytes, g->allocs[i].what);
    while (g->nallocs) gpu_free(g, g->allocs[g->nallocs - 1].p);
    free(g->allocs);
    CUBLAS_CHECK(cublasLtDestroy(g->lt));
    CUBLAS_CHECK(cublasDestroy(g->cublas));
    CUDNN_CHECK(cudnnDestroy(g->cudnn));
    CUDA_CHECK(cudaStreamDestroy(g->stream));
    free(g);
    *gp = NULL;
}

gpu_dtype_t gpu_act_dtype(const gpu_ctx_t *g) { return g->act; }

void gpu_sync(gpu_ctx_t *g) { CUDA_CHECK(cudaStreamSynchronize(g->stream)); }

void *gpu_stream(gpu_ctx_t *g) { return (void *)g->stream; }

cudaGraphExec_t gpu_graph_capture(gpu_ctx_t *g, void (*fn)(void *), void *arg, const char **why)
{
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    CUDA_CHECK(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal));
    fn(arg);
    cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
    if (e == cudaSuccess) {
        e = cudaGraphInstantiate(&exec, graph, 0);
        CUDA_CHECK(cudaGraphDestroy(graph));
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *why = cudaGetErrorString(e);
        return NULL;
    }
    return exec;
}

void gpu_describe(const gpu_ctx_t *g, char *buf, size_t len)
{
    int rt = 0, cublas_ver = 0;
    CUDA_CHECK(cudaRuntimeGetVersion(&rt));
    CUBLAS_CHECK(cublasGetVersion(g->cublas, &cublas_ver));
    snprintf(buf, len, "%s, %d SMs, CUDA runtime %d, cuDNN %zu (built %d), cuBLAS %d, %s mode%s",
             g->name, g->sm_count, rt, (size_t)cudnnGetVersion(), CUDNN_VERSION, cublas_ver,
             g->act == GPU_F32 ? "strict fp32" : "bf16", g->deterministic ? ", deterministic" : "");
}

int gpu_reduce_chunks(const gpu_ctx_t *g, size_t rows, int batch, size_t cols, int slots,
                      size_t rows_min)
{
    size_t want = CEIL_DIV((size_t)4 * g->sm_count, (size_t)(batch > 0 ? batch : 1));
    size_t by_rows = CEIL_DIV(rows, rows_min ? rows_min : 1);
    size_t by_scratch = g->red_floats / ((size_t)(batch > 0 ? batch : 1) * cols * slots);
    if (want > by_rows) want = by_rows;
    if (want > by_scratch) want = by_scratch;
    if (want < 1) {
        // One chunk per item must fit: a shape this wide is a bug in the caller's sizes.
        ASSERT((size_t)(batch > 0 ? batch : 1) * cols * slots <= g->red_floats);
        want = 1;
    }
    return (int)want;
}
