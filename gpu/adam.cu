/*
adam.cu -- ONE fused Adam / AdamW kernel over the whole fp32 parameter buffer (parameters,
gradients and both moments share one layout, style.md §7.4). Twin of common/ops/adam.c:
torch.optim.Adam (weight decay added to the gradient) or, with c.decoupled, AdamW:
  m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
The bias corrections are computed once on the host in double. In the same pass the kernel can
write the bf16 copy of the updated weights that the bf16-mode matmuls read, so no second pass.
*/
#include "gpu_internal.h"
#include <math.h>

typedef struct {
    float lr, b1, b2, eps, wd, step_size, inv_bc2_sqrt;
    int decoupled;
} adam_k_t;

__global__ void adam_kernel(float *p, float *m, float *v, const float *g, bf16 *p16, size_t n,
                            adam_k_t a)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float pi = p[i], gi = g[i];
        if (a.decoupled) pi *= 1.0f - a.lr * a.wd;
        else gi += a.wd * pi;
        float mi = a.b1 * m[i] + (1.0f - a.b1) * gi;
        float vi = a.b2 * v[i] + (1.0f - a.b2) * gi * gi;
        pi -= a.step_size * mi / (sqrtf(vi) * a.inv_bc2_sqrt + a.eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        if (p16) p16[i] = __float2bfloat16_rn(pi);
    }
}

void adam_update_gpu(gpu_ctx_t *g, float *p, float *m, float *v, const float *grad, void *p_bf16,
                     size_t n, adam_cfg_t c, long step)
{
    ASSERT(step >= 1);
    if (!n) return;
    double bc1 = 1.0 - pow((double)c.beta1, (double)step);
    double bc2 = 1.0 - pow((double)c.beta2, (double)step);
    adam_k_t a;
    a.lr = c.lr; a.b1 = c.beta1; a.b2 = c.beta2; a.eps = c.eps; a.wd = c.weight_decay;
    a.step_size = (float)(c.lr / bc1);
    a.inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    a.decoupled = c.decoupled;
    adam_kernel<<<grid_for(g, n, 256), 256, 0, g->stream>>>(p, m, v, grad, (bf16 *)p_bf16, n, a);
    KERNEL_CHECK();
}
