/*
report_curve.c -- dice_vs_time.png: the evaluator's mean Dice (black) and the mean over cases of
each foreground class or region against seconds since the run's start, on a fixed 0..1 axis,
with the time-to-Dice thresholds as dotted grey lines. plot.h draws the frame and the mean; the
entries (3 BraTS regions or 13 BTCV organs: more than plot.h's series limit) are drawn here with
plot_px's mapping and get a legend strip under the plot.
*/
#include "report.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LEGEND_ROW 14
#define LEGEND_COLS 4

static const uint8_t BLACK[3] = { 0, 0, 0 }, GREY[3] = { 150, 150, 150 };

static void draw_entry(plot_image_t *img, const plot_frame_t *fr, const double *x, const double *y, int n,
                       const uint8_t rgb[3])
{
    int have = 0, qx = 0, qy = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(y[i])) { have = 0; continue; }
        int px, py;
        plot_px(fr, 1, x[i], y[i], &px, &py);
        if (have) raster_line(img, qx, qy, px, py, rgb, 0);
        raster_fill(img, px - 1, py - 1, px + 1, py + 1, rgb);
        qx = px; qy = py; have = 1;
    }
}

int report_curve_png(const char *path, const report_run_t *r, const double *thr, int nthr,
                     const char *const *names, char *err)
{
    int n = r->n_eval, nfg = r->nfg;
    double *x = xmalloc(sizeof(double) * (size_t)n * (nfg + 2));
    double *ym = x + n, *yc = x + 2 * n;                    // mean, then (nfg, n) per class
    for (int i = 0; i < n; i++) {
        x[i] = r->ev[i].t;
        ym[i] = r->ev[i].mean;
        for (int j = 0; j < nfg; j++) yc[(size_t)j * n + i] = r->ev[i].fg[j];
    }
    // An anchor series at Dice -1 (below the 0..1 axis: clipped, invisible, no legend) makes the
    // time axis start at 0, the pipeline's start, so the loading time shows.
    double ax[2] = { 0, n ? x[n - 1] : 1 }, ay[2] = { -1, -1 };
    plot_series_t s[2] = {
        { ax, ay, 2, NULL, { 255, 255, 255 }, 1, 0 },
        { x, ym, n, "mean", { 0, 0, 0 }, 1, 1 },
    };
    plot_cfg_t cfg = { 900, 480, "Evaluation Dice vs time", "seconds since the start", "Dice", "Dice", 0.0, 1.0 };
    plot_image_t img;
    plot_frame_t fr;
    if (plot_render(&img, &fr, &cfg, s, 2, err)) { free(x); return -1; }
    for (int k = 0; k < nthr; k++) {
        int ax, ay, bx, by;
        plot_px(&fr, 1, fr.xlo, thr[k], &ax, &ay);
        plot_px(&fr, 1, fr.xhi, thr[k], &bx, &by);
        raster_line(&img, ax, ay, bx, by, GREY, 1);
    }
    for (int j = 0; j < nfg; j++) draw_entry(&img, &fr, x, yc + (size_t)j * n, n, raster_colour(j));
    // Legend strip of the entries: the image grows by ceil(nfg / LEGEND_COLS) rows at the bottom.
    int rows = (nfg + LEGEND_COLS - 1) / LEGEND_COLS;
    plot_image_t big;
    if (raster_new(&big, img.w, img.h + rows * LEGEND_ROW + 6, err)) { plot_image_free(&img); free(x); return -1; }
    memcpy(big.rgb, img.rgb, (size_t)img.w * img.h * 3);
    plot_image_free(&img);
    for (int j = 0; j < nfg; j++) {
        int lx = fr.x0 + (j % LEGEND_COLS) * ((fr.x1 - fr.x0) / LEGEND_COLS);
        int ly = img.h + 2 + (j / LEGEND_COLS) * LEGEND_ROW;
        raster_fill(&big, lx, ly + 2, lx + 12, ly + 4, raster_colour(j));
        plot_text(&big, lx + 16, ly, names && names[j] ? names[j] : r->fg_names[j], BLACK, 1);
    }
    int rc = plot_write_png(path, &big, err);
    plot_image_free(&big);
    free(x);
    return rc;
}
