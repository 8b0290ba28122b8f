/*
pad_crop.c -- zero padding and cropping of (N, C, D, H, W) volumes in one op, on the CPU.
y[p] = x[p + off] inside x, else 0, per axis independently (off < 0 pads the low end, off > 0
crops it; a larger/smaller out pads/crops the high end). Used for ToM_A's odd-size padding and
the CMMB's crop back to X's shape (architecture.md §7.2). Pure copies: no arithmetic.
Twin: gpu/pad_crop.cu.
*/
#include "real.h"
#include "check.h"
#include <string.h>

// Output range [*lo, *hi) along one axis whose source p + off lies in [0, in).
static void valid_range(int in, int out, int off, int *lo, int *hi)
{
    int l = -off > 0 ? -off : 0;
    int h = in - off < out ? in - off : out;
    *lo = l;
    *hi = h > l ? h : l;
}

static void check_args(int N, int C, const int in[3], const int out[3])
{
    ASSERT(N > 0 && C > 0);
    for (int a = 0; a < 3; a++) ASSERT(in[a] > 0 && out[a] > 0);
}

// y: (N, C, out)   x: (N, C, in)
void OP(pad_crop3d_forward)(real *y, const real *x, int N, int C, const int in[3],
                            const int out[3], const int off[3])
{
    check_args(N, C, in, out);
    int lo[3], hi[3];
    for (int a = 0; a < 3; a++) valid_range(in[a], out[a], off[a], &lo[a], &hi[a]);
    const size_t isz = (size_t)in[0] * in[1] * in[2], osz = (size_t)out[0] * out[1] * out[2];
    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const real *xc = x + (size_t)nc * isz;
        real *yc = y + (size_t)nc * osz;
        for (int d = 0; d < out[0]; d++)
        for (int h = 0; h < out[1]; h++) {
            real *yr = yc + ((size_t)d * out[1] + h) * out[2];
            if (d < lo[0] || d >= hi[0] || h < lo[1] || h >= hi[1]) {
                memset(yr, 0, (size_t)out[2] * sizeof *yr);
                continue;
            }
            const real *xr = xc + ((size_t)(d + off[0]) * in[1] + (h + off[1])) * in[2];
            for (int w = 0; w < out[2]; w++) yr[w] = (w >= lo[2] && w < hi[2]) ? xr[w + off[2]] : (real)0;
        }
    }
}

// dx: (N, C, in)   dy: (N, C, out). dx[p + off] += dy[p] (accumulates).
void OP(pad_crop3d_backward)(real *dx, const real *dy, int N, int C, const int in[3],
                             const int out[3], const int off[3])
{
    check_args(N, C, in, out);
    if (!dx) return;
    int lo[3], hi[3];
    for (int a = 0; a < 3; a++) valid_range(in[a], out[a], off[a], &lo[a], &hi[a]);
    const size_t isz = (size_t)in[0] * in[1] * in[2], osz = (size_t)out[0] * out[1] * out[2];
    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        real *dxc = dx + (size_t)nc * isz;
        const real *dyc = dy + (size_t)nc * osz;
        for (int d = lo[0]; d < hi[0]; d++)
        for (int h = lo[1]; h < hi[1]; h++) {
            const real *dyr = dyc + ((size_t)d * out[1] + h) * out[2];
            real *dxr = dxc + ((size_t)(d + off[0]) * in[1] + (h + off[1])) * in[2];
            for (int w = lo[2]; w < hi[2]; w++) dxr[w + off[2]] += dyr[w];
        }
    }
}
