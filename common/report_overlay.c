/*
report_overlay.c -- a prediction over its source scan as one PNG: axial, coronal and sagittal
slices through the reference label's centre of mass, the image in grey (windowed), the
reference as opaque outlines and the prediction as translucent fill, one colour per label value.

The prediction is on the source grid (srm-evaluator undoes the preprocessing), so voxels map
1:1; dims and affine must match or the picture is refused. Slices are cut along the voxel axes
that run closest to the world axes (orient.h), displayed radiologically (patient's right on the
left, anterior / superior up) with square pixels in millimetres, so anisotropic voxels look right.
*/
#include "report.h"
#include "check.h"
#include "dataset.h"
#include "orient.h"
#include "volume.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PANEL_PX   320          // the longest side of a panel, pixels
#define MARGIN     8
#define HEAD       40           // title and panel captions
#define FOOT       34           // legend
#define FILL_ALPHA 0.45

static const uint8_t WHITE[3] = { 255, 255, 255 }, BLACK[3] = { 0, 0, 0 };

static int same_grid(const volume_t *a, const char *pa, const volume_t *b, const char *pb, char *err)
{
    for (int d = 0; d < 3; d++)
        if (a->dim[d] != b->dim[d])
            return set_err(err, "%s: dims %dx%dx%d differ from %s's %dx%dx%d: not on the source grid", pb,
                           b->dim[0], b->dim[1], b->dim[2], pa, a->dim[0], a->dim[1], a->dim[2]);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            if (fabs(a->affine[i][j] - b->affine[i][j]) > CASE_AFFINE_ATOL + CASE_AFFINE_RTOL * fabs(a->affine[i][j]))
                return set_err(err, "%s: affine[%d][%d] = %g differs from %s's %g: not on the source grid", pb, i, j,
                               b->affine[i][j], pa, a->affine[i][j]);
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// 0.5 and 99.5 percentiles of n values, from at most ~1M evenly strided samples.
static void auto_window(const float *v, size_t n, double *lo, double *hi)
{
    size_t stride = n / 1000000 + 1, m = (n + stride - 1) / stride;
    float *s = xmalloc(sizeof(float) * m);
    for (size_t i = 0; i < m; i++) s[i] = v[i * stride];
    qsort(s, m, sizeof *s, cmp_float);
    *lo = s[(size_t)(0.005 * (m - 1))];
    *hi = s[(size_t)(0.995 * (m - 1))];
    if (!(*hi > *lo)) { *lo = s[0]; *hi = s[m - 1] > s[0] ? s[m - 1] : s[0] + 1; }
    free(s);
}

// Centre of mass (voxel indices) of label > 0; 0 when the map is empty.
static int centre_of_mass(const float *lab, const int dim[3], int c[3])
{
    double s[3] = { 0, 0, 0 };
    size_t n = 0;
    for (int i = 0; i < dim[0]; i++)
        for (int j = 0; j < dim[1]; j++)
            for (int k = 0; k < dim[2]; k++)
                if (lab[((size_t)i * dim[1] + j) * dim[2] + k] > 0.5f) { s[0] += i; s[1] += j; s[2] += k; n++; }
    if (!n) return 0;
    for (int d = 0; d < 3; d++) c[d] = (int)lround(s[d] / n);
    return 1;
}

typedef struct {
    const volume_t *img;        // 3D view of the shown channel (C = 1)
    const float *ref, *pred;    // (dim) label maps; ref may be NULL
    double lo, hi;
    ornt_t o;
    double mm_per_px;
} scene_t;

// Voxel index along voxel axis a for pixel p of a panel axis that runs towards world +
// (dir = +1) or world - (dir = -1) as p grows.
static int index_of(const scene_t *sc, int a, int flip, int dir, int p)
{
    int n = sc->img->dim[a];
    int idx = (int)((p + 0.5) * sc->mm_per_px / sc->img->spacing[a]);
    if (idx >= n) idx = n - 1;
    return flip * dir > 0 ? idx : n - 1 - idx;
}

// Panel showing the slice at voxel index `at` of the voxel axis along world axis wfix; columns
// run along world axis wh in direction dh, rows along wv downwards (so top = world + of wv).
static void panel_size(const scene_t *sc, int wh, int wv, int *w, int *h)
{
    int ah = -1, av = -1;
    for (int d = 0; d < 3; d++) { if (sc->o.axis[d] == wh) ah = d; if (sc->o.axis[d] == wv) av = d; }
    *w = (int)ceil(sc->img->dim[ah] * sc->img->spacing[ah] / sc->mm_per_px);
    *h = (int)ceil(sc->img->dim[av] * sc->img->spacing[av] / sc->mm_per_px);
}

static void draw_panel(plot_image_t *out, int x0, int y0, const scene_t *sc, int wfix, int at, int wh, int dh, int wv)
{
    int a[3] = { -1, -1, -1 };                      // voxel axis along world axis w
    for (int d = 0; d < 3; d++) a[sc->o.axis[d]] = d;
    int ah = a[wh], av = a[wv], af = a[wfix];
    int w, h;
    panel_size(sc, wh, wv, &w, &h);
    const int *dim = sc->img->dim;
    int *refpx = sc->ref ? xmalloc(sizeof(int) * (size_t)w * h) : NULL;
    for (int r = 0; r < h; r++) {
        int iv = index_of(sc, av, sc->o.flip[av], -1, r);
        for (int u = 0; u < w; u++) {
            int ih = index_of(sc, ah, sc->o.flip[ah], dh, u);
            int idx[3];
            idx[af] = at; idx[ah] = ih; idx[av] = iv;
            size_t off = ((size_t)idx[0] * dim[1] + idx[1]) * dim[2] + idx[2];
            double g = (sc->img->data[off] - sc->lo) / (sc->hi - sc->lo);
            uint8_t gv = (uint8_t)(g <= 0 ? 0 : g >= 1 ? 255 : g * 255 + 0.5);
            uint8_t grey[3] = { gv, gv, gv };
            raster_fill(out, x0 + u, y0 + r, x0 + u, y0 + r, grey);
            int p = (int)lroundf(sc->pred[off]);
            if (p > 0) raster_blend(out, x0 + u, y0 + r, raster_colour(p - 1), FILL_ALPHA);
            if (refpx) refpx[(size_t)r * w + u] = (int)lroundf(sc->ref[off]);
        }
    }
    if (refpx) {                                    // outline: a labelled pixel with a differing 4-neighbour
        for (int r = 0; r < h; r++)
            for (int u = 0; u < w; u++) {
                int v = refpx[(size_t)r * w + u];
                if (v <= 0) continue;
                int edge = (u == 0 || refpx[(size_t)r * w + u - 1] != v) || (u == w - 1 || refpx[(size_t)r * w + u + 1] != v) ||
                           (r == 0 || refpx[(size_t)(r - 1) * w + u] != v) || (r == h - 1 || refpx[(size_t)(r + 1) * w + u] != v);
                if (edge) raster_fill(out, x0 + u, y0 + r, x0 + u, y0 + r, raster_colour(v - 1));
            }
        free(refpx);
    }
}

static void legend(plot_image_t *out, int y, const float *ref, const float *pred, size_t n)
{
    int seen[256] = { 0 };
    for (size_t i = 0; i < n; i++) {
        int p = (int)lroundf(pred[i]), q = ref ? (int)lroundf(ref[i]) : 0;
        if (p > 0 && p < 256) seen[p] = 1;
        if (q > 0 && q < 256) seen[q] = 1;
    }
    int x = MARGIN;
    x += plot_text(out, x, y, ref ? "outline: reference  fill: prediction   labels:" : "fill: prediction   labels:", WHITE, 1) + 8;
    for (int v = 1; v < 256; v++) {
        if (!seen[v]) continue;
        char t[8];
        snprintf(t, sizeof t, "%d", v);
        raster_fill(out, x, y, x + 10, y + 6, raster_colour(v - 1));
        x += 14;
        x += plot_text(out, x, y, t, WHITE, 1) + 8;
    }
}

static int render(const char *path, const report_overlay_t *o, const volume_t *img, const volume_t *ref,
                  const volume_t *pred, char *err)
{
    scene_t sc = { img, ref ? ref->data : NULL, pred->data, o->lo, o->hi, { { 0 }, { 0 } }, 1 };
    if (orient_of_affine(img->affine, &sc.o, err)) return -1;
    size_t n = volume_voxels(img);
    if (!(sc.hi > sc.lo)) auto_window(img->data, n, &sc.lo, &sc.hi);
    int c[3] = { img->dim[0] / 2, img->dim[1] / 2, img->dim[2] / 2 };
    if (!(ref && centre_of_mass(ref->data, img->dim, c))) centre_of_mass(pred->data, img->dim, c);
    double ext = 0;
    for (int d = 0; d < 3; d++) ext = fmax(ext, img->dim[d] * img->spacing[d]);
    sc.mm_per_px = ext / PANEL_PX;
    // world axes: 0 x (R), 1 y (A), 2 z (S). Panels: axial (x | y), coronal (x | z), sagittal (y | z).
    static const struct { int wfix, wh, dh, wv; const char *name; } P[3] = {
        { 2, 0, -1, 1, "axial" }, { 1, 0, -1, 2, "coronal" }, { 0, 1, -1, 2, "sagittal" } };
    int pw[3], ph[3], W = MARGIN, H = 0;
    for (int k = 0; k < 3; k++) {
        panel_size(&sc, P[k].wh, P[k].wv, &pw[k], &ph[k]);
        W += pw[k] + MARGIN;
        if (ph[k] > H) H = ph[k];
    }
    plot_image_t out;
    if (raster_new(&out, W, HEAD + H + FOOT, err)) return -1;
    raster_fill(&out, 0, 0, W - 1, out.h - 1, BLACK);
    if (o->title) plot_text(&out, MARGIN, 6, o->title, WHITE, 1);
    int x = MARGIN;
    for (int k = 0; k < 3; k++) {
        int a = 0;
        for (int d = 0; d < 3; d++) if (sc.o.axis[d] == P[k].wfix) a = d;
        char cap[64];
        snprintf(cap, sizeof cap, "%s, voxel axis %d = %d", P[k].name, a, c[a]);
        plot_text(&out, x, HEAD - 14, cap, WHITE, 1);
        draw_panel(&out, x, HEAD, &sc, P[k].wfix, c[a], P[k].wh, P[k].dh, P[k].wv);
        x += pw[k] + MARGIN;
    }
    legend(&out, HEAD + H + 12, sc.ref, sc.pred, n);
    int rc = plot_write_png(path, &out, err);
    plot_image_free(&out);
    return rc;
}

int report_overlay_png(const char *path, const report_overlay_t *o, char *err)
{
    volume_t img, pred, ref;
    memset(&ref, 0, sizeof ref);
    if (nifti_read_volume(o->image, &img, err)) return -1;
    if (o->channel < 0 || o->channel >= img.C) {
        set_err(err, "%s: channel %d requested, the image has %d", o->image, o->channel, img.C);
        volume_free(&img);
        return -1;
    }
    if (img.C > 1) {                                // keep only the shown channel
        size_t n = volume_voxels(&img);
        memmove(img.data, img.data + (size_t)o->channel * n, n * sizeof(float));
        img.C = 1;
    }
    if (nifti_read_volume(o->prediction, &pred, err)) { volume_free(&img); return -1; }
    int rc = pred.C == 1 ? 0 : set_err(err, "%s: %d channels; a label map has one", o->prediction, pred.C);
    if (rc == 0) rc = same_grid(&img, o->image, &pred, o->prediction, err);
    int have_ref = 0;
    if (rc == 0 && o->reference) {
        rc = nifti_read_volume(o->reference, &ref, err);
        have_ref = rc == 0;
        if (rc == 0 && ref.C != 1) rc = set_err(err, "%s: %d channels; a label map has one", o->reference, ref.C);
        if (rc == 0) rc = same_grid(&img, o->image, &ref, o->reference, err);
    }
    if (rc == 0) rc = render(path, o, &img, have_ref ? &ref : NULL, &pred, err);
    if (have_ref) volume_free(&ref);
    volume_free(&pred);
    volume_free(&img);
    return rc;
}
