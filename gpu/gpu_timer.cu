/*
gpu_timer.cu -- CUDA-event timing of work on the context's stream, for tests and benchmarks
written in plain C (gpu.h has no CUDA types): start / stop record events on the stream, ms
waits for the stop event and returns the elapsed device time between the two.
Also the tagged marks (gpu_internal.h) that split one profiled step finer than its ops: an
armed gpu_marks_t records an event per gpu_mark call; nothing is recorded while none is armed.
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

// ---- tagged marks --------------------------------------------------------------------------
struct gpu_marks {
    gpu_ctx_t *g;
    cudaEvent_t *ev;        // [cap], created up front: recording never allocates
    int *tag;               // [cap]
    int n, cap, overflow;
};

gpu_marks_t *gpu_marks_armed = NULL;

gpu_marks_t *gpu_marks_new(gpu_ctx_t *g, int cap)
{
    ASSERT(cap > 1);
    gpu_marks_t *mk = (gpu_marks_t *)xcalloc(1, sizeof *mk);
    mk->g = g;
    mk->cap = cap;
    mk->ev = (cudaEvent_t *)xcalloc((size_t)cap, sizeof *mk->ev);
    mk->tag = (int *)xcalloc((size_t)cap, sizeof *mk->tag);
    for (int i = 0; i < cap; i++) CUDA_CHECK(cudaEventCreate(&mk->ev[i]));
    return mk;
}

int gpu_marks_arm(gpu_marks_t *mk, char *err)
{
    // a mark recorded into a capture would become a graph node: marks are for eager work only
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(mk->g->stream, &cs));
    if (cs != cudaStreamCaptureStatusNone) {
        set_err(err, "gpu marks: the context's stream is being captured into a graph");
        return -1;
    }
    if (gpu_marks_armed) {
        set_err(err, "gpu marks: another mark list is already armed");
        return -1;
    }
    mk->n = 0;
    mk->overflow = 0;
    gpu_marks_armed = mk;
    return 0;
}

void gpu_marks_disarm(void) { gpu_marks_armed = NULL; }

void gpu_mark_record(gpu_marks_t *mk, gpu_ctx_t *g, int tag)
{
    if (mk->g != g) return;                 // another context's work: not ours to time
    if (mk->n == mk->cap) { mk->overflow = 1; return; }
    CUDA_CHECK(cudaEventRecord(mk->ev[mk->n], g->stream));
    mk->tag[mk->n++] = tag;
}

int gpu_marks_sum(gpu_marks_t *mk, double *ms, int *count, int ntags, char *err)
{
    for (int t = 0; t < ntags; t++) { ms[t] = 0; if (count) count[t] = 0; }
    if (mk->overflow) {
        set_err(err, "gpu marks: more than %d marks in one profiled run", mk->cap);
        return -1;
    }
    if (!mk->n) return 0;
    if (mk->tag[mk->n - 1] >= 0) {
        set_err(err, "gpu marks: the last mark (tag %d) has no closing boundary after it",
                mk->tag[mk->n - 1]);
        return -1;
    }
    CUDA_CHECK(cudaEventSynchronize(mk->ev[mk->n - 1]));
    // interval i (mark i to mark i + 1) belongs to mark i's tag; a negative tag closes a span
    for (int i = 0; i + 1 < mk->n; i++) {
        const int t = mk->tag[i];
        if (t < 0) continue;
        if (t >= ntags) {
            set_err(err, "gpu marks: tag %d out of range (%d tags)", t, ntags);
            return -1;
        }
        float e = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&e, mk->ev[i], mk->ev[i + 1]));
        ms[t] += e;
        if (count) count[t]++;
    }
    return 0;
}

void gpu_marks_free(gpu_marks_t **mp)
{
    gpu_marks_t *mk = *mp;
    if (!mk) return;
    if (gpu_marks_armed == mk) gpu_marks_armed = NULL;
    for (int i = 0; i < mk->cap; i++) CUDA_CHECK(cudaEventDestroy(mk->ev[i]));
    free(mk->ev);
    free(mk->tag);
    free(mk);
    *mp = NULL;
}
