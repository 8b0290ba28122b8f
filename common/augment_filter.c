/*
augment_filter.c -- the two neighbourhood steps of the nnU-Net set on one channel of a patch:
Gaussian blur (separable, scipy.ndimage.gaussian_filter conventions: truncate 4 sigma,
"reflect" border d c b a | a b c d) and low-resolution simulation (nearest-neighbour down to
round(P * zoom) then back up; nnU-Net upsamples with cubic splines, we use trilinear, which is
cheaper and keeps values inside the original range).
*/
#include "augment.h"
#include "check.h"
#include "preprocess.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int reflect(int i, int n)
{
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - i - 1;
    return i;
}

// Blur x along one axis: x viewed as (outer, len, inner), inner contiguous.
static void blur_axis(float *x, float *tmp, size_t outer, int len, size_t inner, double sigma)
{
    int rad = (int)(4.0 * sigma + 0.5);
    if (rad < 1) return;
    float *w = xmalloc((size_t)(2 * rad + 1) * sizeof(float));
    double sum = 0;
    for (int k = -rad; k <= rad; k++) sum += w[k + rad] = (float)exp(-0.5 * k * k / (sigma * sigma));
    for (int k = 0; k <= 2 * rad; k++) w[k] = (float)(w[k] / sum);
    size_t n = outer * (size_t)len * inner;
    memcpy(tmp, x, n * sizeof(float));
    if (inner == 1) {                               // contiguous lines: one line at a time
        float *line = xmalloc((size_t)(len + 2 * rad) * sizeof(float));
        for (size_t o = 0; o < outer; o++) {
            const float *src = tmp + o * len;
            for (int l = -rad; l < len + rad; l++) line[l + rad] = src[reflect(l, len)];
            float *dst = x + o * len;
            for (int l = 0; l < len; l++) {
                float acc = 0;
                for (int k = 0; k <= 2 * rad; k++) acc += w[k] * line[l + k];
                dst[l] = acc;
            }
        }
        free(line);
    } else {                                        // whole rows weighted and added: vectorises
        for (size_t o = 0; o < outer; o++)
            for (int l = 0; l < len; l++) {
                float *dst = x + (o * len + l) * inner;
                memset(dst, 0, inner * sizeof(float));
                for (int k = -rad; k <= rad; k++) {
                    const float *src = tmp + (o * len + reflect(l + k, len)) * inner;
                    float wk = w[k + rad];
                    for (size_t i = 0; i < inner; i++) dst[i] += wk * src[i];
                }
            }
    }
    free(w);
}

void augment_blur(float *x, const int dim[3], const double sigma[3])
{
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    float *tmp = xmalloc(n * sizeof(float));
    blur_axis(x, tmp, 1, dim[0], (size_t)dim[1] * dim[2], sigma[0]);
    blur_axis(x, tmp, (size_t)dim[0], dim[1], (size_t)dim[2], sigma[1]);
    blur_axis(x, tmp, (size_t)dim[0] * dim[1], dim[2], 1, sigma[2]);
    free(tmp);
}

void augment_lowres(float *x, const int dim[3], double zoom, int keep)
{
    int m[3];
    for (int d = 0; d < 3; d++) {
        m[d] = d == keep ? dim[d] : (int)lround(dim[d] * zoom);
        m[d] = m[d] < 1 ? 1 : m[d] > dim[d] ? dim[d] : m[d];
    }
    if (m[0] == dim[0] && m[1] == dim[1] && m[2] == dim[2]) return;
    int *t[3];                                      // nearest source index per small-grid index
    for (int d = 0; d < 3; d++) {
        t[d] = xmalloc((size_t)m[d] * sizeof(int));
        for (int j = 0; j < m[d]; j++) {           // extent aligned, as preprocess_resample_*
            long i = lround(floor((j + 0.5) * dim[d] / m[d] - 0.5 + 0.5));
            t[d][j] = (int)(i < 0 ? 0 : i >= dim[d] ? dim[d] - 1 : i);
        }
    }
    float *small = xmalloc((size_t)m[0] * m[1] * m[2] * sizeof(float));
    for (int a = 0; a < m[0]; a++)
        for (int b = 0; b < m[1]; b++)
            for (int c = 0; c < m[2]; c++)
                small[((size_t)a * m[1] + b) * m[2] + c] = x[((size_t)t[0][a] * dim[1] + t[1][b]) * dim[2] + t[2][c]];
    preprocess_resample_linear(x, dim, small, 1, m, -1);
    free(small);
    for (int d = 0; d < 3; d++) free(t[d]);
}
