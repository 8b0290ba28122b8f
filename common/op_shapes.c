/* op_shapes.c -- precision-independent helpers declared in ops.h (built once, not per precision). */
#include "ops.h"
#include "check.h"

void conv3d_out_dims(const conv3d_shape_t *s, int out[3])
{
    for (int a = 0; a < 3; a++)
        out[a] = (s->in[a] + 2 * s->pad[a] - s->k[a]) / s->stride[a] + 1;
}

void conv_transpose3d_out_dims(const conv3d_shape_t *s, int out[3])
{
    for (int a = 0; a < 3; a++)
        out[a] = (s->in[a] - 1) * s->stride[a] - 2 * s->pad[a] + s->k[a] + s->outpad[a];
}

conv3d_shape_t conv3d_shape(int N, int Cin, int Cout, const int in[3], int k, int stride, int pad)
{
    conv3d_shape_t s = { .N = N, .Cin = Cin, .Cout = Cout };
    for (int a = 0; a < 3; a++) {
        s.in[a] = in[a];
        s.k[a] = k; s.stride[a] = stride; s.pad[a] = pad; s.outpad[a] = 0;
    }
    return s;
}

// architecture.md §5.4: forward = identity, reverse = flip, slice = "chunk into nslices
// contiguous blocks of m = L/nslices, then interleave": pi_s(j) = (j mod n)*m + j/n.
size_t tom_index(tom_order_t order, size_t j, size_t L, size_t nslices)
{
    switch (order) {
    case TOM_FORWARD: return j;
    case TOM_REVERSE: return L - 1 - j;
    case TOM_SLICE: {
        ASSERT(nslices > 0 && L % nslices == 0);
        size_t m = L / nslices;
        return (j % nslices) * m + j / nslices;
    }
    }
    ASSERT(0 && "unknown tom order");
    return 0;
}
