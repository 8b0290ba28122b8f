/*
layout.cu -- the boundary conversions: channels-first (N, C, S) <-> channels-last (N, S, C)
with an optional type change (fp32 <-> bf16), and plain fp32 <-> bf16 conversion. Used where
volumes enter and logits leave the GPU, and to bring PyTorch-layout conv weights into the GPU
layout (N = Cout, C = Cin, S = kernel volume). Nothing inside the network calls these.
A 32 x 32 tile transpose through shared memory keeps both reads and writes coalesced.
*/
#include "gpu_internal.h"

#define TILE 32

// out[n][c][r] = in[n][r][c] for in (N, R, Cc): rows R, columns Cc.
// Tiles are numbered along grid.x (R and Cc may both be large); n is grid.y.
template <typename Ti, typename To>
__global__ void transpose_kernel(To *out, const Ti *in, size_t R, size_t Cc, size_t tiles_c)
{
    __shared__ float tile[TILE][TILE + 1];
    const size_t n = blockIdx.y;
    const size_t tr = blockIdx.x / tiles_c, tc = blockIdx.x % tiles_c;
    const Ti *src = in + n * R * Cc;
    To *dst = out + n * R * Cc;
    for (int j = threadIdx.y; j < TILE; j += blockDim.y) {
        size_t r = tr * TILE + j, c = tc * TILE + threadIdx.x;
        if (r < R && c < Cc) tile[j][threadIdx.x] = to_f(src[r * Cc + c]);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += blockDim.y) {
        size_t c = tc * TILE + j, r = tr * TILE + threadIdx.x;
        if (r < R && c < Cc) dst[c * R + r] = from_f<To>(tile[threadIdx.x][j]);
    }
}

template <typename Ti, typename To> __global__ void convert_kernel(To *y, const Ti *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = from_f<To>(to_f(x[i]));
}

static void transpose(gpu_ctx_t *g, void *y, gpu_dtype_t ty, const void *x, gpu_dtype_t tx, int N,
                      size_t R, size_t Cc)
{
    ASSERT(N > 0 && N <= 65535);
    ASSERT(y != x);
    if (!R || !Cc) return;
    size_t tiles_c = CEIL_DIV(Cc, (size_t)TILE), tiles = CEIL_DIV(R, (size_t)TILE) * tiles_c;
    ASSERT(tiles < (1ull << 31));
    dim3 grid((unsigned)tiles, (unsigned)N), block(TILE, 8);
    ACT_DISPATCH(tx, Ti, ACT_DISPATCH(ty, To, transpose_kernel<Ti, To><<<grid, block, 0, g->stream>>>(
                                                  (To *)y, (const Ti *)x, R, Cc, tiles_c)));
    KERNEL_CHECK();
}

void gpu_to_channels_last(gpu_ctx_t *g, void *y, gpu_dtype_t ty, const void *x, gpu_dtype_t tx,
                          int N, int C, size_t S)
{
    transpose(g, y, ty, x, tx, N, (size_t)C, S);
}

void gpu_to_channels_first(gpu_ctx_t *g, void *y, gpu_dtype_t ty, const void *x, gpu_dtype_t tx,
                           int N, int C, size_t S)
{
    transpose(g, y, ty, x, tx, N, S, (size_t)C);
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
