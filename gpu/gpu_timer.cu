/*
gpu_timer.cu -- CUDA-event timing of work on the context's stream, for tests and benchmarks
written in plain C (gpu.h has no CUDA types): start / stop record events on the stream, ms
waits for the stop event and returns the elapsed device time between the two.
*/
#include "gpu_internal.h"
#include <stdlib.h>

struct gpu_timer {
    gpu_ctx_t *g;
    cudaEvent_t a, b;
};

gpu_timer_t *gpu_timer_new(gpu_ctx_t *g)
{
    gpu_timer_t *t = (gpu_timer_t *)xcalloc(1, sizeof *t);
    t->g = g;
    CUDA_CHECK(cudaEventCreate(&t->a));
    CUDA_CHECK(cudaEventCreate(&t->b));
    return t;
}

void gpu_timer_start(gpu_timer_t *t) { CUDA_CHECK(cudaEventRecord(t->a, t->g->stream)); }
void gpu_timer_stop(gpu_timer_t *t) { CUDA_CHECK(cudaEventRecord(t->b, t->g->stream)); }

float gpu_timer_ms(gpu_timer_t *t)
{
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize(t->b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t->a, t->b));
    return ms;
}

void gpu_timer_free(gpu_timer_t **tp)
{
    gpu_timer_t *t = *tp;
    if (!t) return;
    CUDA_CHECK(cudaEventDestroy(t->a));
    CUDA_CHECK(cudaEventDestroy(t->b));
    free(t);
    *tp = NULL;
}
