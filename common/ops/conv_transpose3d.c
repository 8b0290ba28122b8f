/*
conv_transpose3d.c -- 3D transposed convolution on the CPU (PyTorch ConvTranspose3d semantics).

A transposed convolution is the adjoint of the convolution that maps its output back to its
input: with w of layout (Cin, Cout, k) read as a conv weight (Cout' = Cin, Cin' = Cout, k), this
"mirror" conv goes from the convT output size to the convT input size. So
  convT forward       = mirror-conv backward-data,
  convT backward-data = mirror-conv forward,
  convT backward-w    = mirror-conv backward-weight with x and dy swapped,
and all the loop work lives in conv3d.c. Twin: gpu/conv_transpose3d.cu (or cuDNN).
*/
#include "real.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// The conv whose backward-data is this transposed conv. output_padding only adds the extra high
// rows that the conv's floor division drops, so it needs outpad < stride (as PyTorch requires).
static conv3d_shape_t mirror_conv(const conv3d_shape_t *s, int out[3])
{
    conv_transpose3d_out_dims(s, out);
    conv3d_shape_t c = { .N = s->N, .Cin = s->Cout, .Cout = s->Cin };
    for (int a = 0; a < 3; a++) {
        ASSERT(s->in[a] > 0 && s->k[a] > 0 && s->stride[a] > 0 && s->pad[a] >= 0);
        ASSERT(s->outpad[a] >= 0 && s->outpad[a] < s->stride[a]);
        ASSERT(out[a] > 0);
        c.in[a] = out[a];
        c.k[a] = s->k[a]; c.stride[a] = s->stride[a]; c.pad[a] = s->pad[a]; c.outpad[a] = 0;
    }
    int back[3];
    conv3d_out_dims(&c, back);
    for (int a = 0; a < 3; a++) ASSERT(back[a] == s->in[a]);
    return c;
}

// y: (N, Cout, out)   x: (N, Cin, in)   w: (Cin, Cout, k0, k1, k2)   b: (Cout) or NULL
// y[n,co,i*stride - pad + k] += w[ci,co,k] * x[n,ci,i]  (summed over ci, i, k), then + b[co]
void OP(conv_transpose3d_forward)(real *y, const real *x, const real *w, const real *b,
                                  conv3d_shape_t s)
{
    int out[3];
    conv3d_shape_t c = mirror_conv(&s, out);
    const size_t osz = (size_t)out[0] * out[1] * out[2];
    // Forward writes: start from the bias (or zero), then accumulate the mirror backward-data.
    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)s.N * s.Cout; nc++) {
        real v = b ? b[nc % s.Cout] : (real)0;
        real *yp = y + (size_t)nc * osz;
        for (size_t i = 0; i < osz; i++) yp[i] = v;
    }
    OP(conv3d_backward)(y, NULL, NULL, x, NULL, w, c);
}

// dx: (N, Cin, in)   dw: (Cin, Cout, k)   db: (Cout)   dy: (N, Cout, out)   x: (N, Cin, in)
// Accumulates into every non-NULL gradient (ops.h).
void OP(conv_transpose3d_backward)(real *dx, real *dw, real *db,
                                   const real *dy, const real *x, const real *w, conv3d_shape_t s)
{
    int out[3];
    conv3d_shape_t c = mirror_conv(&s, out);
    const size_t osz = (size_t)out[0] * out[1] * out[2];
    const size_t isz = (size_t)s.in[0] * s.in[1] * s.in[2];
    if (db) OP(bias_backward)(db, dy, s.N, s.Cout, osz, 0);
    if (dw) {
        // mirror conv: its input is our dy, its output gradient is our x
        ASSERT(x);
        OP(conv3d_backward)(NULL, dw, NULL, x, dy, w, c);
    }
    if (dx) {
        // conv3d_forward writes (=), so go through a scratch buffer to accumulate
        size_t n = (size_t)s.N * s.Cin * isz;
        real *tmp = xmalloc(n * sizeof *tmp);
        OP(conv3d_forward)(tmp, dy, w, NULL, c);
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) dx[i] += tmp[i];
        free(tmp);
    }
}
