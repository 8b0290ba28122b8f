/*
memory.cu -- every byte of device memory the backend holds: a tracked cudaMalloc (never managed
memory) that counts current and PEAK bytes, the shared cuDNN/cuBLAS workspace, the activation
arena (one cudaMalloc sized before the first step, bump allocation inside), and the
upload / download / memset helpers.

Peak is the counterpart of PyTorch's max_memory_allocated: our buffers plus the workspaces we
hand to the libraries, not the CUDA context or library code (gpu_mem_info gives the
cudaMemGetInfo view of everything).
*/
#include "gpu_internal.h"
#include <stdlib.h>
#include <string.h>

void *gpu_malloc(gpu_ctx_t *g, size_t bytes, const char *what)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        (void)cudaGetLastError();    // clear the sticky-free error state of the failed call
        CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
        DIE("cudaMalloc of %zu bytes for %s failed (%s); we hold %zu bytes, %zu of %zu free",
            bytes, what ? what : "?", cudaGetErrorString(e), g->mem_current, fr, tot);
    }
    if (g->nallocs == g->cap_allocs) {
        g->cap_allocs = g->cap_allocs ? 2 * g->cap_allocs : 64;
        g->allocs = (gpu_alloc_rec *)xrealloc(g->allocs, g->cap_allocs * sizeof *g->allocs);
    }
    g->allocs[g->nallocs++] = (gpu_alloc_rec){ p, bytes, what ? what : "?" };
    g->mem_current += bytes;
    if (g->mem_current > g->mem_peak) g->mem_peak = g->mem_current;
    return p;
}

void gpu_free(gpu_ctx_t *g, void *p)
{
    if (!p) return;
    for (size_t i = g->nallocs; i-- > 0;) {
        if (g->allocs[i].p != p) continue;
        g->mem_current -= g->allocs[i].bytes;
        g->allocs[i] = g->allocs[--g->nallocs];
        CUDA_CHECK(cudaFree(p));
        return;
    }
    DIE("gpu_free(%p): not a pointer from gpu_malloc", p);
}

gpu_mem_stats_t gpu_mem_stats(const gpu_ctx_t *g)
{
    return (gpu_mem_stats_t){ g->mem_current, g->mem_peak, g->nallocs };
}

void gpu_mem_reset_peak(gpu_ctx_t *g) { g->mem_peak = g->mem_current; }

void gpu_mem_info(gpu_ctx_t *g, size_t *free_bytes, size_t *total_bytes)
{
    (void)g;
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void gpu_workspace_reserve(gpu_ctx_t *g, size_t bytes)
{
    if (bytes <= g->ws_bytes && g->ws) return;
    // Work already queued may still read the old workspace.
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    gpu_free(g, g->ws);
    g->ws = gpu_malloc(g, bytes, "cuDNN/cuBLAS workspace");
    g->ws_bytes = bytes;
    CUBLAS_CHECK(cublasSetWorkspace(g->cublas, g->ws, g->ws_bytes));
}

void gpu_upload(gpu_ctx_t *g, void *dst, const void *src, size_t bytes)
{
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream));
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
}

void gpu_download(gpu_ctx_t *g, void *dst, const void *src, size_t bytes)
{
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream));
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
}

void gpu_copy(gpu_ctx_t *g, void *dst, const void *src, size_t bytes)
{
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g->stream));
}

void gpu_memset(gpu_ctx_t *g, void *dst, int byte, size_t bytes)
{
    CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, g->stream));
}

void gpu_poison(gpu_ctx_t *g, void *dst, size_t bytes) { gpu_memset(g, dst, 0xFF, bytes); }

// ---- arena -------------------------------------------------------------------
struct gpu_arena {
    gpu_ctx_t *g;
    char *base;
    size_t cap, off, high;
    const char *what;
};

gpu_arena_t *gpu_arena_new(gpu_ctx_t *g, size_t capacity, const char *what)
{
    gpu_arena_t *a = (gpu_arena_t *)xcalloc(1, sizeof *a);
    a->g = g;
    a->cap = gpu_arena_round(capacity);
    a->what = what ? what : "arena";
    a->base = (char *)gpu_malloc(g, a->cap, a->what);
    return a;
}

void *gpu_arena_alloc(gpu_arena_t *a, size_t bytes)
{
    size_t need = gpu_arena_round(bytes);
    if (a->off + need > a->cap)
        DIE("%s: %zu more bytes wanted, %zu of %zu used (the arena was sized too small)", a->what,
            need, a->off, a->cap);
    void *p = a->base + a->off;
    a->off += need;
    if (a->off > a->high) a->high = a->off;
    return p;
}

size_t gpu_arena_mark(const gpu_arena_t *a) { return a->off; }

void gpu_arena_reset(gpu_arena_t *a, size_t mark)
{
    ASSERT(mark <= a->off);
    a->off = mark;
}

size_t gpu_arena_high_water(const gpu_arena_t *a) { return a->high; }
size_t gpu_arena_capacity(const gpu_arena_t *a) { return a->cap; }

void gpu_arena_destroy(gpu_arena_t **ap)
{
    gpu_arena_t *a = *ap;
    if (!a) return;
    gpu_free(a->g, a->base);
    free(a);
    *ap = NULL;
}
