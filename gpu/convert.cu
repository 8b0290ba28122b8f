/*
convert.cu -- plain fp32 <-> bf16 conversion of device arrays (the parameters' bf16 copies of
training and inference). The boundary layouts have their own kernels: the input goes up as
the stem's 2x2x2 blocks (stem_s2d.cu, infer.cu's window gather), logits come down through
the host.
*/
#include "gpu_internal.h"

template <typename Ti, typename To> __global__ void convert_kernel(To *y, const Ti *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = from_f<To>(to_f(x[i]));
}

void gpu_convert(gpu_ctx_t *g, void *y, gpu_dtype_t ty, const void *x, gpu_dtype_t tx, size_t n)
{
    if (!n) return;
    if (ty == tx) {
        gpu_copy(g, y, x, n * gpu_dtype_size(tx));
        return;
    }
    ACT_DISPATCH(tx, Ti, ACT_DISPATCH(ty, To, convert_kernel<Ti, To><<<grid_for(g, n, 256), 256, 0, g->stream>>>(
                                                  (To *)y, (const Ti *)x, n)));
    KERNEL_CHECK();
}
