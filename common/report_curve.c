/*
report_curve.c -- dice_vs_time.png: the evaluator's mean Dice (black) and the mean over cases of
each foreground class or region against seconds since the run's start, on a fixed 0..1 axis,
with the time-to-Dice thresholds as dotted grey lines. plot.h draws the frame, the mean and up
to three entries with their legend; further entries (e.g. the 13 BTCV organs) are drawn here
with plot_px's mapping and get a legend strip under the plot.
*/
#include "report.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LEGEND_ROW 14
#define LEGEND_COLS 4

static const uint8_t BLACK[3] = { 0, 0, 0 }, GREY[3] = { 150, 150, 150 };

static void draw_extra(plot_image_t *img, const plot_frame_t *fr, const double *x, const double *y, int n,
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
    plot_series_t s[PLOT_MAX_SERIES];
    memset(s, 0, sizeof s);
    int ns = 0;
    s[ns++] = (plot_series_t){ x, ym, n, "mean", { 0, 0, 0 }, 1, 1 };
    int direct = nfg < PLOT_MAX_SERIES - 1 ? nfg : PLOT_MAX_SERIES - 1;
    for (int j = 0; j < direct; j++) {
        const uint8_t *c = raster_colour(j);
        s[ns++] = (plot_series_t){ x, yc + (size_t)j * n, n, names && names[j] ? names[j] : r->fg_names[j],
                                   { c[0], c[1], c[2] }, 1, 1 };
    }
    char title[96];
    snprintf(title, sizeof title, "Evaluation Dice vs time");
    plot_cfg_t cfg = { 900, 480, title, "seconds since the start", "Dice", "Dice", 0.0, 1.0 };
    plot_image_t img;
    plot_frame_t fr;
    if (plot_render(&img, &fr, &cfg, s, ns, err)) { free(x); return -1; }
    for (int k = 0; k < nthr; k++) {
        int ax, ay, bx, by;
        plot_px(&fr, 1, fr.xlo, thr[k], &ax, &ay);
        plot_px(&fr, 1, fr.xhi, thr[k], &bx, &by);
        raster_line(&img, ax, ay, bx, by, GREY, 1);
    }
    int extra = nfg - direct;
    if (extra > 0) {
        for (int j = direct; j < nfg; j++) draw_extra(&img, &fr, x, yc + (size_t)j * n, n, raster_colour(j));
        // Legend strip: the image grows by ceil(extra / LEGEND_COLS) rows at the bottom.
        int rows = (extra + LEGEND_COLS - 1) / LEGEND_COLS;
        plot_image_t big;
        if (raster_new(&big, img.w, img.h + rows * LEGEND_ROW + 6, err)) { plot_image_free(&img); free(x); return -1; }
        memcpy(big.rgb, img.rgb, (size_t)img.w * img.h * 3);
        for (int k = 0; k < extra; k++) {
            int j = direct + k, lx = fr.x0 + (k % LEGEND_COLS) * ((fr.x1 - fr.x0) / LEGEND_COLS);
            int ly = img.h + 2 + (k / LEGEND_COLS) * LEGEND_ROW;
            raster_fill(&big, lx, ly + 2, lx + 12, ly + 4, raster_colour(j));
            plot_text(&big, lx + 16, ly, names && names[j] ? names[j] : r->fg_names[j], BLACK, 1);
        }
        plot_image_free(&img);
        img = big;
    }
    int rc = plot_write_png(path, &img, err);
    plot_image_free(&img);
    free(x);
    return rc;
}
