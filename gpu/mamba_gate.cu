/*
mamba_gate.cu -- the Mamba layer's gate in original token order: G = Y * SiLU(z) forward and
dz = dG * Y * SiLU'(z) backward, where Y = sum_k y_k is the pre-gate output summed over the
three directions (z is shared by them, so sum_k y_k SiLU(z) = Y SiLU(z): architecture.md §5.4
step 8 with the sum of step 3 taken first).
Why here and not in the scans: dz needs the pre-gate y. Inside the scan backward that was a
third sum over the 16 states in the walk (~5 of its ~31 instructions per lane-step) and a
read-modify-write of dz at pi(j) per direction; with Y saved by the forward (as mamba_ssm saves
its pre-gate `out`) dz is one elementwise pass for all three directions. The forward's scans
emit Y (z = NULL) and this file forms G from it for out_proj; the backward forms it again in
the same pass as dz (dW_out needs G; Y is what is saved, G is not), so Y and z are read once.
Memory bound: 16-byte vectors (8 bf16 / 4 f32 channels a thread) where E and the bases allow,
else one element a thread. fp32 math; the accurate exponential in both modes (the bytes, not
the math, set the time).
*/
#include "gpu_internal.h"

#define GATE_BLOCK 256

// ld_vec / st_vec (gpu_internal.h): V channels a thread, fp32 inside
template <typename T, int V>
__global__ void gate_fwd_kernel(T *G, const T *Y, const T *xz, size_t n, int E)
{
    const size_t per = (size_t)(E / V);             // threads a row
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n * per;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / per, c = i % per * V;
        float y[V], z[V], o[V];
        ld_vec<T, V>(Y + r * E + c, y);
        ld_vec<T, V>(xz + r * 2 * E + E + c, z);
#pragma unroll
        for (int j = 0; j < V; j++) o[j] = y[j] * (z[j] * sigmoid_f(z[j]));
        st_vec<T, V>(G + r * E + c, o);
    }
}

template <typename T, int V>
__global__ void gate_bwd_kernel(T *dxz, T *G, const T *dG, const T *Y, const T *xz, size_t n, int E)
{
    const size_t per = (size_t)(E / V);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n * per;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / per, c = i % per * V;
        float dg[V], y[V], z[V], dz[V], o[V];
        ld_vec<T, V>(dG + r * E + c, dg);
        ld_vec<T, V>(Y + r * E + c, y);
        ld_vec<T, V>(xz + r * 2 * E + E + c, z);
#pragma unroll
        for (int j = 0; j < V; j++) {
            const float sz = sigmoid_f(z[j]);
            dz[j] = dg[j] * y[j] * dsilu_of(z[j], sz);
            o[j] = y[j] * (z[j] * sz);              // as gate_fwd_kernel: the same G
        }
        st_vec<T, V>(dxz + r * 2 * E + E + c, dz);
        if (G) st_vec<T, V>(G + r * E + c, o);
    }
}

void mamba_gate_forward_gpu(gpu_ctx_t *g, void *G, const void *Y, const void *xz, size_t n, int E)
{
    if (!n) return;
    const int v = vec16_width(gpu_dtype_size(g->act), E, { G, Y, xz });
    const size_t work = n * (size_t)(E / v);
    ACT_DISPATCH(g->act, T, {
        constexpr int V = 16 / (int)sizeof(T);
        if (v == V)
            gate_fwd_kernel<T, V><<<grid_for(g, work, GATE_BLOCK), GATE_BLOCK, 0, g->stream>>>(
                (T *)G, (const T *)Y, (const T *)xz, n, E);
        else
            gate_fwd_kernel<T, 1><<<grid_for(g, work, GATE_BLOCK), GATE_BLOCK, 0, g->stream>>>(
                (T *)G, (const T *)Y, (const T *)xz, n, E);
    });
    KERNEL_CHECK();
}

void mamba_gate_backward_gpu(gpu_ctx_t *g, void *dxz, void *G, const void *dG, const void *Y,
                             const void *xz, size_t n, int E)
{
    if (!n) return;
    const int v = vec16_width(gpu_dtype_size(g->act), E, { dxz, G, dG, Y, xz });
    const size_t work = n * (size_t)(E / v);
    ACT_DISPATCH(g->act, T, {
        constexpr int V = 16 / (int)sizeof(T);
        if (v == V)
            gate_bwd_kernel<T, V><<<grid_for(g, work, GATE_BLOCK), GATE_BLOCK, 0, g->stream>>>(
                (T *)dxz, (T *)G, (const T *)dG, (const T *)Y, (const T *)xz, n, E);
        else
            gate_bwd_kernel<T, 1><<<grid_for(g, work, GATE_BLOCK), GATE_BLOCK, 0, g->stream>>>(
                (T *)dxz, (T *)G, (const T *)dG, (const T *)Y, (const T *)xz, n, E);
    });
    KERNEL_CHECK();
}
