/*
conv3d.c -- 3D convolution on the CPU (PyTorch Conv3d semantics, per-axis kernel/stride/padding).

Direct loops, one output row (fixed n, d, h; a block of CB channels) at a time, accumulated in
double row buffers (the weight gradient's short per-row partials are float in the float build,
then summed in double); the innermost loop runs over W with its valid range computed once per kernel
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

// part_t: the weight gradient's per-row partial sums (at most OW terms; each then added to a
// double total). Float in the float build: twice the SIMD width, and short sums.
#ifdef SRM_REAL_DOUBLE
typedef double part_t;
#else
typedef float part_t;
#endif
typedef double acc_t;       // forward / backward-data rows: long sums over Cin * k, kept double

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

// Geometry of one conv call, shared by the row/task bodies below. nblk: channel blocks of CB
// (output channels in forward, input channels in the backward passes).
typedef struct {
    int N, Cin, Cout, nblk;
    int ID, IH, IW, OD, OH, OW, KD, KH, KW, sd, sh, sw, pd, ph, pw;
    size_t isz, osz, ksz;
} geom_t;

static geom_t make_geom(const conv3d_shape_t *s, const int out[3], int nblk_channels)
{
    geom_t g = { .N = s->N, .Cin = s->Cin, .Cout = s->Cout, .nblk = (nblk_channels + CB - 1) / CB,
                 .ID = s->in[0], .IH = s->in[1], .IW = s->in[2], .OD = out[0], .OH = out[1],
                 .OW = out[2], .KD = s->k[0], .KH = s->k[1], .KW = s->k[2], .sd = s->stride[0],
                 .sh = s->stride[1], .sw = s->stride[2], .pd = s->pad[0], .ph = s->pad[1],
                 .pw = s->pad[2] };
    g.isz = (size_t)g.ID * g.IH * g.IW;
    g.osz = (size_t)g.OD * g.OH * g.OW;
    g.ksz = (size_t)g.KD * g.KH * g.KW;
    return g;
}

// The row/task bodies get an AVX2+FMA clone picked at load time (x86-64 with GNU ifunc only):
// twice the SIMD width of the baseline SSE2. Results then depend on the machine (FMA
// contraction), never on the thread count.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CONV_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CONV_CLONES
#endif

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

// One forward row task r: output row (n, od, oh) of CB output channels. acc: (CB, OW) scratch.
CONV_CLONES static void fwd_row(const geom_t *g, real *y, const real *x, const real *w,
                                const real *b, acc_t *acc, const int *wlo, const int *whi, long r)
{
    const int ID = g->ID, IH = g->IH, IW = g->IW, OD = g->OD, OH = g->OH, OW = g->OW;
    const int KD = g->KD, KH = g->KH, KW = g->KW, sd = g->sd, sh = g->sh, sw = g->sw;
    const int pd = g->pd, ph = g->ph, pw = g->pw, nblk = g->nblk, Cin = g->Cin, Cout = g->Cout;
    const size_t isz = g->isz, osz = g->osz, ksz = g->ksz;
    acc_t *a0 = acc, *a1 = acc + OW, *a2 = acc + 2 * OW, *a3 = acc + 3 * OW;
    int oh = (int)(r % OH), od = (int)(r / OH % OD);
    int blk = (int)(r / ((long)OH * OD) % nblk), n = (int)(r / ((long)OH * OD * nblk));
    int co0 = blk * CB, nco = Cout - co0 < CB ? Cout - co0 : CB;
    for (int j = 0; j < CB; j++) {
        acc_t bias = (b && j < nco) ? (acc_t)b[co0 + j] : 0;
        for (int ow = 0; ow < OW; ow++) acc[(size_t)j * OW + ow] = bias;
    }
    for (int ci = 0; ci < Cin; ci++) {
        const real *xc = x + ((size_t)n * Cin + ci) * isz;
        for (int kd = 0; kd < KD; kd++) {
            int id = od * sd - pd + kd;
            if (id < 0 || id >= ID) continue;
            for (int kh = 0; kh < KH; kh++) {
                int ih = oh * sh - ph + kh;
                if (ih < 0 || ih >= IH) continue;
                const real *xr = xc + ((size_t)id * IH + ih) * IW;
                for (int kw = 0; kw < KW; kw++) {
                    acc_t wv[CB] = { 0 };
                    size_t tap = ((size_t)kd * KH + kh) * KW + kw;
                    for (int j = 0; j < nco; j++) wv[j] = w[((size_t)(co0 + j) * Cin + ci) * ksz + tap];
                    const int off = kw - pw;        // input column = ow*sw + off
                    const int lo = wlo[kw], hi = whi[kw];
                    if (sw == 1) {
                        #pragma omp simd
                        for (int ow = lo; ow < hi; ow++) {
                            acc_t xv = xr[ow + off];
                            a0[ow] += wv[0] * xv; a1[ow] += wv[1] * xv;
                            a2[ow] += wv[2] * xv; a3[ow] += wv[3] * xv;
                        }
                    } else if (sw == 2) {      // the strided stem/down convs: constant stride vectorises
                        #pragma omp simd
                        for (int ow = lo; ow < hi; ow++) {
                            acc_t xv = xr[2 * ow + off];
                            a0[ow] += wv[0] * xv; a1[ow] += wv[1] * xv;
                            a2[ow] += wv[2] * xv; a3[ow] += wv[3] * xv;
                        }
                    } else {
                        for (int ow = lo; ow < hi; ow++) {
                            acc_t xv = xr[ow * sw + off];
                            a0[ow] += wv[0] * xv; a1[ow] += wv[1] * xv;
                            a2[ow] += wv[2] * xv; a3[ow] += wv[3] * xv;
                        }
                    }
                }
            }
        }
    }
    for (int j = 0; j < nco; j++) {
        real *yr = y + ((size_t)n * Cout + co0 + j) * osz + ((size_t)od * OH + oh) * OW;
        for (int ow = 0; ow < OW; ow++) yr[ow] = (real)acc[(size_t)j * OW + ow];
    }
}

// y: (N, Cout, out)   x: (N, Cin, in)   w: (Cout, Cin, k0, k1, k2)   b: (Cout) or NULL
void OP(conv3d_forward)(real *y, const real *x, const real *w, const real *b, conv3d_shape_t s)
{
    int out[3];
    conv3d_out_dims(&s, out);
    check_shape(&s, out);
    const geom_t g = make_geom(&s, out, s.Cout);
    const int IW = g.IW, OW = g.OW, KW = g.KW, sw = g.sw, pw = g.pw;
    const long rows = (long)s.N * g.nblk * g.OD * g.OH;

    #pragma omp parallel
    {
        // rows a0..a3 of acc: output channels co0..co0+3 (unused ones get zero weights)
        acc_t *acc = xmalloc((size_t)CB * OW * sizeof *acc);
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            fwd_row(&g, y, x, w, b, acc, wlo, whi, r);
        }
        free(acc);
    }
}

// ----------------------------------------------------------------------------
// backward (accumulates, see ops.h; x is only read when dw != NULL)

// One backward-data row task r: input row (n, id, ih) of CB input channels. acc: (CB, IW).
CONV_CLONES static void bwd_data_row(const geom_t *g, real *dx, const real *dy, const real *w,
                                     acc_t *acc, const int *wlo, const int *whi, long r)
{
    const int ID = g->ID, IH = g->IH, IW = g->IW, OD = g->OD, OH = g->OH, OW = g->OW;
    const int KD = g->KD, KH = g->KH, KW = g->KW, sd = g->sd, sh = g->sh, sw = g->sw;
    const int pd = g->pd, ph = g->ph, pw = g->pw, nblk = g->nblk, Cin = g->Cin, Cout = g->Cout;
    const size_t isz = g->isz, osz = g->osz, ksz = g->ksz;
    acc_t *a0 = acc, *a1 = acc + IW, *a2 = acc + 2 * IW, *a3 = acc + 3 * IW;
    int ih = (int)(r % IH), id = (int)(r / IH % ID);
    int blk = (int)(r / ((long)IH * ID) % nblk), n = (int)(r / ((long)IH * ID * nblk));
    int ci0 = blk * CB, nci = Cin - ci0 < CB ? Cin - ci0 : CB;
    memset(acc, 0, (size_t)CB * IW * sizeof *acc);
    for (int co = 0; co < Cout; co++) {
        const real *dyc = dy + ((size_t)n * Cout + co) * osz;
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
                    acc_t wv[CB] = { 0 };
                    size_t tap = ((size_t)kd * KH + kh) * KW + kw;
                    for (int j = 0; j < nci; j++) wv[j] = w[((size_t)co * Cin + ci0 + j) * ksz + tap];
                    const int off = kw - pw;        // input column = ow*sw + off
                    const int lo = wlo[kw], hi = whi[kw];
                    if (sw == 1) {
                        #pragma omp simd
                        for (int ow = lo; ow < hi; ow++) {
                            acc_t g = dyr[ow];
                            a0[ow + off] += wv[0] * g; a1[ow + off] += wv[1] * g;
                            a2[ow + off] += wv[2] * g; a3[ow + off] += wv[3] * g;
                        }
                    } else {
                        for (int ow = lo; ow < hi; ow++) {
                            acc_t g = dyr[ow];
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
        real *dxr = dx + ((size_t)n * Cin + ci0 + j) * isz + ((size_t)id * IH + ih) * IW;
        const acc_t *aj = acc + (size_t)j * IW;
        for (int iw = 0; iw < IW; iw++) dxr[iw] = (real)((double)dxr[iw] + aj[iw]);
    }
}

// dx[n,ci,i] += sum_{co,k : i = o*stride - pad + k} w[co,ci,k] dy[n,co,o]
// Each thread owns whole dx rows (n, id, ih; a block of CB input channels) and scatters into
// private double rows.
static void backward_data(real *dx, const real *dy, const real *w, const conv3d_shape_t *s,
                          const int out[3])
{
    const geom_t g = make_geom(s, out, s->Cin);
    const int IW = g.IW, OW = g.OW, KW = g.KW, sw = g.sw, pw = g.pw;
    const long rows = (long)s->N * g.nblk * g.ID * g.IH;

    #pragma omp parallel
    {
        // rows a0..a3 of acc: input channels ci0..ci0+3 (unused ones get zero weights)
        acc_t *acc = xmalloc((size_t)CB * IW * sizeof *acc);
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            bwd_data_row(&g, dx, dy, w, acc, wlo, whi, r);
        }
        free(acc);
    }
}

// One backward-weight task t: output channel co, a block of CB input channels. acc: (CB, ksz).
CONV_CLONES static void bwd_weight_task(const geom_t *g, real *dw, const real *dy, const real *x,
                                        double *acc, const int *wlo, const int *whi, long t)
{
    const int ID = g->ID, IH = g->IH, IW = g->IW, OD = g->OD, OH = g->OH, OW = g->OW;
    const int KD = g->KD, KH = g->KH, KW = g->KW, sd = g->sd, sh = g->sh, sw = g->sw;
    const int pd = g->pd, ph = g->ph, pw = g->pw, nblk = g->nblk, N = g->N, Cin = g->Cin;
    const int Cout = g->Cout;
    const size_t isz = g->isz, osz = g->osz, ksz = g->ksz;
    int co = (int)(t / nblk), ci0 = (int)(t % nblk) * CB;
    int nci = Cin - ci0 < CB ? Cin - ci0 : CB;
    memset(acc, 0, (size_t)CB * ksz * sizeof *acc);
    for (int n = 0; n < N; n++) {
        const real *dyc = dy + ((size_t)n * Cout + co) * osz;
        const real *xc[CB];                 // unused channels alias the first: read, discarded
        for (int j = 0; j < CB; j++) xc[j] = x + ((size_t)n * Cin + ci0 + (j < nci ? j : 0)) * isz;
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
                        part_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;   // one row: <= OW terms
                        if (sw == 1) {
                            #pragma omp simd reduction(+ : s0, s1, s2, s3)
                            for (int ow = lo; ow < hi; ow++) {
                                part_t g = dyr[ow];
                                s0 += g * x0[ow + off]; s1 += g * x1[ow + off];
                                s2 += g * x2[ow + off]; s3 += g * x3[ow + off];
                            }
                        } else if (sw == 2) {
                            #pragma omp simd reduction(+ : s0, s1, s2, s3)
                            for (int ow = lo; ow < hi; ow++) {
                                part_t g = dyr[ow];
                                int i = 2 * ow + off;
                                s0 += g * x0[i]; s1 += g * x1[i]; s2 += g * x2[i]; s3 += g * x3[i];
                            }
                        } else {
                            for (int ow = lo; ow < hi; ow++) {
                                part_t g = dyr[ow];
                                int i = ow * sw + off;
                                s0 += g * x0[i]; s1 += g * x1[i]; s2 += g * x2[i]; s3 += g * x3[i];
                            }
                        }
                        ar[kw] += (double)s0; ar[ksz + kw] += (double)s1;
                        ar[2 * ksz + kw] += (double)s2; ar[3 * ksz + kw] += (double)s3;
                    }
                }
            }
        }
    }
    for (int j = 0; j < nci; j++) {
        real *dwp = dw + ((size_t)co * Cin + ci0 + j) * ksz;
        const double *aj = acc + (size_t)j * ksz;
        for (size_t q = 0; q < ksz; q++) dwp[q] = (real)((double)dwp[q] + aj[q]);
    }
}

// dw[co,ci,k] += sum_{n,o} dy[n,co,o] * x[n,ci,o*stride - pad + k]
// One (co, block of CB input channels) per task; each tap is a dot product over W rows: each
// row's partial (part_t) is added to a double sum in a fixed order (the simd reduction order is
// fixed at compile time).
static void backward_weight(real *dw, const real *dy, const real *x, const conv3d_shape_t *s,
                            const int out[3])
{
    const geom_t g = make_geom(s, out, s->Cin);
    const int IW = g.IW, OW = g.OW, KW = g.KW, sw = g.sw, pw = g.pw;
    const long tasks = (long)s->Cout * g.nblk;
    const size_t ksz = g.ksz;

    #pragma omp parallel
    {
        double *acc = xmalloc((size_t)CB * ksz * sizeof *acc);   // (CB, k0, k1, k2)
        int wlo[KW], whi[KW];
        for (int kw = 0; kw < KW; kw++) tap_range(kw, sw, pw, IW, OW, &wlo[kw], &whi[kw]);

        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            bwd_weight_task(&g, dw, dy, x, acc, wlo, whi, t);
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
    if (db) OP(bias_backward)(db, dy, s.N, s.Cout, osz, 0);
    if (dw) {
        ASSERT(x);
        backward_weight(dw, dy, x, &s, out);
    }
    if (dx) {
        ASSERT(w);
        backward_data(dx, dy, w, &s, out);
    }
}
