/*
conv3d.c -- 3D convolution on the CPU (PyTorch Conv3d semantics, per-axis kernel/stride/padding).

Direct loops, one output row (fixed n, d, h; a block of CB channels) at a time, accumulated in
double row buffers; the innermost loop runs over W with its valid range computed once per kernel
tap, so the interior has no bounds checks, and each loaded input value feeds CB channels. Every
output row is owned by exactly one thread and summed in a fixed order, so results do not depend
on the thread count. Not im2col, not SIMD intrinsics (the W loops carry `omp simd`).
conv_transpose3d.c reuses this file's backward (its forward is our backward-data) and forward.
Twin: gpu/conv3d.cu.
*/
#include "real.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// helpers

// Channels handled together by one row task (output channels in forward, input channels in
// backward-data): each value loaded from the shared row is used CB times. Measured 1.6x faster
// than one channel per row for 64^3 16->16 k3; the arithmetic per element is unchanged.
#define CB 4
_Static_assert(CB == 4, "the W loops below are written out for 4 channels");

// Output indices o in [*lo, *hi) whose input index i = o*stride - pad + k lies in [0, in).
static void tap_range(int k, int stride, int pad, int in, int out, int *lo, int *hi)
{
    int a = pad - k;                            // need o*stride >= a
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int b = in - 1 + pad - k;                   // need o*stride <= b
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > out) h = out;
    *lo = l;
    *hi = h > l ? h : l;
}

static void check_shape(const conv3d_shape_t *s, const int out[3])
{
    ASSERT(s->N > 0 && s->Cin > 0 && s->Cout > 0);
    for (int a = 0; a < 3; a++) {
        ASSERT(s->in[a] > 0 && s->k[a] > 0 && s->stride[a] > 0 && s->pad[a] >= 0);
        ASSERT(out[a] > 0);
    }
}

// ----------------------------------------------------------------------------
// forward: y[n,co,o] = b[co] + sum_{ci,k} w[co,ci,k] * x[n,ci,o*stride - pad + k]

// y: (N, Cout, out)   x: (N, Cin, in)   w: (Cout, Cin, k0, k1, k2)   b: (Cout) or NULL
void OP(conv3d_forward)(real *y, const real *x, const real *w, const real *b, conv3d_shape_t s)
{
    int out[3];
    conv3d_out_dims(&s, out);
    check_shape(&s, out);
    const int ID = s.in[0], IH = s.in[1], IW = s.in[2];
    const int OD = out[0], OH = out[1], OW = out[2];
    const int KD = s.k[0], KH = s.k[1], KW = s.k[2];
    const int sd = s.stride[0], sh = s.stride[1], sw = s.stride[2];
    const int pd = s.pad[0], ph = s.pad[1], pw = s.pad[2];
    const size_t isz = (size_t)ID * IH * IW, osz = (size_t)OD * OH * OW;
    const size_t ksz = (size_t)KD * KH * KW;
    const int nblk = (s.Cout + CB - 1) / CB;
    const long rows = (long)s.N * nblk * OD * OH;

    #pragma omp parallel
    {
        // rows a0..a3 of acc: output channels co0..co0+3 (unused ones get zero weights)
        double *acc = xmalloc((size_t)CB * OW * sizeof *acc);
        double *a0 = acc, *a1 = acc + OW, *a2 = acc + 2 * OW, *a3 = acc + 3 * OW;
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            int oh = (int)(r % OH), od = (int)(r / OH % OD);
            int blk = (int)(r / ((long)OH * OD) % nblk), n = (int)(r / ((long)OH * OD * nblk));
            int co0 = blk * CB, nco = s.Cout - co0 < CB ? s.Cout - co0 : CB;
            for (int j = 0; j < CB; j++) {
                double bias = (b && j < nco) ? (double)b[co0 + j] : 0.0;
                for (int ow = 0; ow < OW; ow++) acc[(size_t)j * OW + ow] = bias;
            }
            for (int ci = 0; ci < s.Cin; ci++) {
                const real *xc = x + ((size_t)n * s.Cin + ci) * isz;
                for (int kd = 0; kd < KD; kd++) {
                    int id = od * sd - pd + kd;
                    if (id < 0 || id >= ID) continue;
                    for (int kh = 0; kh < KH; kh++) {
                        int ih = oh * sh - ph + kh;
                        if (ih < 0 || ih >= IH) continue;
                        const real *xr = xc + ((size_t)id * IH + ih) * IW;
                        for (int kw = 0; kw < KW; kw++) {
                            double wv[CB] = { 0 };
                            size_t tap = ((size_t)kd * KH + kh) * KW + kw;
                            for (int j = 0; j < nco; j++) wv[j] = w[((size_t)(co0 + j) * s.Cin + ci) * ksz + tap];
                            const int off = kw - pw;        // input column = ow*sw + off
                            const int lo = wlo[kw], hi = whi[kw];
                            if (sw == 1) {
                                #pragma omp simd
                                for (int ow = lo; ow < hi; ow++) {
                                    double xv = xr[ow + off];
                                    a0[ow] += wv[0] * xv; a1[ow] += wv[1] * xv;
                                    a2[ow] += wv[2] * xv; a3[ow] += wv[3] * xv;
                                }
                            } else {
                                for (int ow = lo; ow < hi; ow++) {
                                    double xv = xr[ow * sw + off];
                                    a0[ow] += wv[0] * xv; a1[ow] += wv[1] * xv;
                                    a2[ow] += wv[2] * xv; a3[ow] += wv[3] * xv;
                                }
                            }
                        }
                    }
                }
            }
            for (int j = 0; j < nco; j++) {
                real *yr = y + ((size_t)n * s.Cout + co0 + j) * osz + ((size_t)od * OH + oh) * OW;
                for (int ow = 0; ow < OW; ow++) yr[ow] = (real)acc[(size_t)j * OW + ow];
            }
        }
        free(acc);
    }
}

// ----------------------------------------------------------------------------
// backward (accumulates, see ops.h; x is only read when dw != NULL)

// dx[n,ci,i] += sum_{co,k : i = o*stride - pad + k} w[co,ci,k] dy[n,co,o]
// Each thread owns whole dx rows (n, id, ih; a block of CB input channels) and scatters into
// private double rows.
static void backward_data(real *dx, const real *dy, const real *w, const conv3d_shape_t *s,
                          const int out[3])
{
    const int ID = s->in[0], IH = s->in[1], IW = s->in[2];
    const int OD = out[0], OH = out[1], OW = out[2];
    const int KD = s->k[0], KH = s->k[1], KW = s->k[2];
    const int sd = s->stride[0], sh = s->stride[1], sw = s->stride[2];
    const int pd = s->pad[0], ph = s->pad[1], pw = s->pad[2];
    const size_t isz = (size_t)ID * IH * IW, osz = (size_t)OD * OH * OW;
    const size_t ksz = (size_t)KD * KH * KW;
    const int nblk = (s->Cin + CB - 1) / CB;
    const long rows = (long)s->N * nblk * ID * IH;

    #pragma omp parallel
    {
        // rows a0..a3 of acc: input channels ci0..ci0+3 (unused ones get zero weights)
        double *acc = xmalloc((size_t)CB * IW * sizeof *acc);
        double *a0 = acc, *a1 = acc + IW, *a2 = acc + 2 * IW, *a3 = acc + 3 * IW;
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            int ih = (int)(r % IH), id = (int)(r / IH % ID);
            int blk = (int)(r / ((long)IH * ID) % nblk), n = (int)(r / ((long)IH * ID * nblk));
            int ci0 = blk * CB, nci = s->Cin - ci0 < CB ? s->Cin - ci0 : CB;
            memset(acc, 0, (size_t)CB * IW * sizeof *acc);
            for (int co = 0; co < s->Cout; co++) {
                const real *dyc = dy + ((size_t)n * s->Cout + co) * osz;
                for (int kd = 0; kd < KD; kd++) {
                    int t = id + pd - kd;           // = od * sd
                    if (t < 0 || t % sd) continue;
                    int od = t / sd;
                    if (od >= OD) continue;
                    for (int kh = 0; kh < KH; kh++) {
                        int u = ih + ph - kh;
                        if (u < 0 || u % sh) continue;
                        int oh = u / sh;
                        if (oh >= OH) continue;
                        const real *dyr = dyc + ((size_t)od * OH + oh) * OW;
                        for (int kw = 0; kw < KW; kw++) {
                            double wv[CB] = { 0 };
                            size_t tap = ((size_t)kd * KH + kh) * KW + kw;
                            for (int j = 0; j < nci; j++) wv[j] = w[((size_t)co * s->Cin + ci0 + j) * ksz + tap];
                            const int off = kw - pw;        // input column = ow*sw + off
                            const int lo = wlo[kw], hi = whi[kw];
                            if (sw == 1) {
                                #pragma omp simd
                                for (int ow = lo; ow < hi; ow++) {
                                    double g = dyr[ow];
                                    a0[ow + off] += wv[0] * g; a1[ow + off] += wv[1] * g;
                                    a2[ow + off] += wv[2] * g; a3[ow + off] += wv[3] * g;
                                }
                            } else {
                                for (int ow = lo; ow < hi; ow++) {
                                    double g = dyr[ow];
                                    int i = ow * sw + off;
                                    a0[i] += wv[0] * g; a1[i] += wv[1] * g;
                                    a2[i] += wv[2] * g; a3[i] += wv[3] * g;
                                }
                            }
                        }
                    }
                }
            }
            for (int j = 0; j < nci; j++) {
                real *dxr = dx + ((size_t)n * s->Cin + ci0 + j) * isz + ((size_t)id * IH + ih) * IW;
                const double *aj = acc + (size_t)j * IW;
                for (int iw = 0; iw < IW; iw++) dxr[iw] = (real)((double)dxr[iw] + aj[iw]);
            }
        }
        free(acc);
    }
}

// dw[co,ci,k] += sum_{n,o} dy[n,co,o] * x[n,ci,o*stride - pad + k]
// One (co, block of CB input channels) per task; each tap is a dot product over W rows, summed
// in double in a fixed order (the simd reduction order is fixed at compile time).
static void backward_weight(real *dw, const real *dy, const real *x, const conv3d_shape_t *s,
                            const int out[3])
{
    const int ID = s->in[0], IH = s->in[1], IW = s->in[2];
    const int OD = out[0], OH = out[1], OW = out[2];
    const int KD = s->k[0], KH = s->k[1], KW = s->k[2];
    const int sd = s->stride[0], sh = s->stride[1], sw = s->stride[2];
    const int pd = s->pad[0], ph = s->pad[1], pw = s->pad[2];
    const size_t isz = (size_t)ID * IH * IW, osz = (size_t)OD * OH * OW;
    const size_t ksz = (size_t)KD * KH * KW;
    const int nblk = (s->Cin + CB - 1) / CB;
    const long tasks = (long)s->Cout * nblk;

    #pragma omp parallel
    {
        double *acc = xmalloc((size_t)CB * ksz * sizeof *acc);   // (CB, k0, k1, k2)
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            int co = (int)(t / nblk), ci0 = (int)(t % nblk) * CB;
            int nci = s->Cin - ci0 < CB ? s->Cin - ci0 : CB;
            memset(acc, 0, (size_t)CB * ksz * sizeof *acc);
            for (int n = 0; n < s->N; n++) {
                const real *dyc = dy + ((size_t)n * s->Cout + co) * osz;
                const real *xc[CB];                 // unused channels alias the first: read, discarded
                for (int j = 0; j < CB; j++) xc[j] = x + ((size_t)n * s->Cin + ci0 + (j < nci ? j : 0)) * isz;
                for (int od = 0; od < OD; od++)
                for (int oh = 0; oh < OH; oh++) {
                    const real *dyr = dyc + ((size_t)od * OH + oh) * OW;
                    for (int kd = 0; kd < KD; kd++) {
                        int id = od * sd - pd + kd;
                        if (id < 0 || id >= ID) continue;
                        for (int kh = 0; kh < KH; kh++) {
                            int ih = oh * sh - ph + kh;
                            if (ih < 0 || ih >= IH) continue;
                            size_t row = ((size_t)id * IH + ih) * IW;
                            const real *x0 = xc[0] + row, *x1 = xc[1] + row, *x2 = xc[2] + row, *x3 = xc[3] + row;
                            double *ar = acc + ((size_t)kd * KH + kh) * KW;
                            for (int kw = 0; kw < KW; kw++) {
                                const int off = kw - pw;    // input column = ow*sw + off
                                const int lo = wlo[kw], hi = whi[kw];
                                double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                                if (sw == 1) {
                                    #pragma omp simd reduction(+ : s0, s1, s2, s3)
                                    for (int ow = lo; ow < hi; ow++) {
                                        double g = dyr[ow];
                                        s0 += g * x0[ow + off]; s1 += g * x1[ow + off];
                                        s2 += g * x2[ow + off]; s3 += g * x3[ow + off];
                                    }
                                } else {
                                    for (int ow = lo; ow < hi; ow++) {
                                        double g = dyr[ow];
                                        int i = ow * sw + off;
                                        s0 += g * x0[i]; s1 += g * x1[i]; s2 += g * x2[i]; s3 += g * x3[i];
                                    }
                                }
                                ar[kw] += s0; ar[ksz + kw] += s1; ar[2 * ksz + kw] += s2; ar[3 * ksz + kw] += s3;
                            }
                        }
                    }
                }
            }
            for (int j = 0; j < nci; j++) {
                real *dwp = dw + ((size_t)co * s->Cin + ci0 + j) * ksz;
                const double *aj = acc + (size_t)j * ksz;
                for (size_t q = 0; q < ksz; q++) dwp[q] = (real)((double)dwp[q] + aj[q]);
            }
        }
        free(acc);
    }
}

// dx: (N, Cin, in)   dw: (Cout, Cin, k)   db: (Cout)   dy: (N, Cout, out)   x: (N, Cin, in)
void OP(conv3d_backward)(real *dx, real *dw, real *db,
                         const real *dy, const real *x, const real *w, conv3d_shape_t s)
{
    int out[3];
    conv3d_out_dims(&s, out);
    check_shape(&s, out);
    const size_t osz = (size_t)out[0] * out[1] * out[2];
    if (db) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < s.Cout; co++) {
            double sum = 0;
            for (int n = 0; n < s.N; n++) {
                const real *d = dy + ((size_t)n * s.Cout + co) * osz;
                for (size_t i = 0; i < osz; i++) sum += d[i];
            }
            db[co] = (real)((double)db[co] + sum);
        }
    }
    if (dw) {
        ASSERT(x);
        backward_weight(dw, dy, x, &s, out);
    }
    if (dx) {
        ASSERT(w);
        backward_data(dx, dy, w, &s, out);
    }
}
