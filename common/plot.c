/*
plot.c -- renders line plots into an RGB buffer and writes them as PNG with libpng (plot.h).

Why hand-written: the exporter only needs one kind of picture (a couple of curves against step),
and Debian has no small, maintained C library that plots to PNG without a GUI toolkit (PLplot
and cairo-based stacks pull in fonts, X/Qt/GTK pieces) or a gnuplot child process (one more
binary to install, ship in the offline bundle, and keep alive). Axes, nice ticks, a 5x7 font
(plot_font.c) and Bresenham lines are a few hundred lines; libpng does the file format.
*/
#include "plot.h"
#include "check.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t BLACK[3] = { 0, 0, 0 }, GRID[3] = { 225, 225, 225 };

static void put(plot_image_t *img, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= img->w || y >= img->h) return;
    memcpy(img->rgb + ((size_t)y * img->w + x) * 3, rgb, 3);
}

static void fill(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(img, x, y, rgb);
}

// Bresenham with a 2x2 brush, so the line's own pixels (x, y) are always painted.
static void line(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, e = dx + dy;
    for (;;) {
        fill(img, x0, y0, x0 + 1, y0 + 1, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}

// A tick step of 1, 2 or 5 x 10^k giving about `target` intervals over range.
static double nice_step(double range, int target)
{
    double raw = range / target, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

// Widen [lo, hi] to whole tick steps; a flat range gets some height first.
static void nice_range(double *lo, double *hi, double *step)
{
    if (!(*hi > *lo)) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= pad;
        *hi += pad;
    }
    *step = nice_step(*hi - *lo, 5);
    *lo = floor(*lo / *step + 1e-9) * *step;
    *hi = ceil(*hi / *step - 1e-9) * *step;
}

static void fmt_num(char *buf, size_t cap, double v, double step)
{
    if (fabs(v) < step * 1e-6) v = 0;
    if (v != 0 && (fabs(v) >= 1e6 || fabs(step) < 1e-4)) {
        snprintf(buf, cap, "%.1e", v);
        return;
    }
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, cap, "%.*f", dec, v);
}

void plot_px(const plot_frame_t *fr, int right, double x, double y, int *px, int *py)
{
    double lo = right ? fr->rlo : fr->llo, hi = right ? fr->rhi : fr->lhi;
    *px = fr->x0 + (int)lround((x - fr->xlo) / (fr->xhi - fr->xlo) * (fr->x1 - fr->x0));
    *py = fr->y1 - (int)lround((y - lo) / (hi - lo) * (fr->y1 - fr->y0));
}

// Data ranges of the x axis and of the left axis over finite points.
static int data_ranges(const plot_series_t *s, int ns, double *xlo, double *xhi, double *llo, double *lhi,
                       int *has_left, int *has_right)
{
    int any = 0;
    *xlo = *llo = INFINITY;
    *xhi = *lhi = -INFINITY;
    *has_left = *has_right = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            any = 1;
            *xlo = fmin(*xlo, x);
            *xhi = fmax(*xhi, x);
            if (s[k].right_axis) { *has_right = 1; continue; }
            *has_left = 1;
            *llo = fmin(*llo, y);
            *lhi = fmax(*lhi, y);
        }
    if (!*has_left) { *llo = 0; *lhi = 1; }
    return any;
}

static void draw_axes(plot_image_t *img, const plot_frame_t *fr, double xs, double ls, double rs, int has_right)
{
    char buf[32];
    for (double v = fr->xlo; v <= fr->xhi + xs * 1e-6; v += xs) {
        int px, py;
        plot_px(fr, 0, v, fr->llo, &px, &py);
        for (int y = fr->y0; y < fr->y1; y++) put(img, px, y, GRID);
        fill(img, px, fr->y1, px, fr->y1 + 4, BLACK);
        fmt_num(buf, sizeof buf, v, xs);
        plot_text(img, px - (int)strlen(buf) * 3, fr->y1 + 7, buf, BLACK, 1);
    }
    for (double v = fr->llo; v <= fr->lhi + ls * 1e-6; v += ls) {
        int px, py;
        plot_px(fr, 0, fr->xlo, v, &px, &py);
        for (int x = fr->x0; x < fr->x1; x++) put(img, x, py, GRID);
        fill(img, fr->x0 - 4, py, fr->x0, py, BLACK);
        fmt_num(buf, sizeof buf, v, ls);
        plot_text(img, fr->x0 - 7 - (int)strlen(buf) * 6, py - 3, buf, BLACK, 1);
    }
    if (has_right)
        for (double v = fr->rlo; v <= fr->rhi + rs * 1e-6; v += rs) {
            int px, py;
            plot_px(fr, 1, fr->xhi, v, &px, &py);
            fill(img, fr->x1, py, fr->x1 + 4, py, BLACK);
            fmt_num(buf, sizeof buf, v, rs);
            plot_text(img, fr->x1 + 7, py - 3, buf, BLACK, 1);
        }
    fill(img, fr->x0, fr->y0, fr->x1, fr->y0, BLACK);           // frame
    fill(img, fr->x0, fr->y1, fr->x1, fr->y1, BLACK);
    fill(img, fr->x0, fr->y0, fr->x0, fr->y1, BLACK);
    fill(img, fr->x1, fr->y0, fr->x1, fr->y1, BLACK);
}

static void draw_series(plot_image_t *img, const plot_frame_t *fr, const plot_series_t *s)
{
    int have_prev = 0, qx = 0, qy = 0;
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !isfinite(s->y[i])) { have_prev = 0; continue; }
        int px, py;
        plot_px(fr, s->right_axis, s->x[i], s->y[i], &px, &py);
        if (have_prev) line(img, qx, qy, px, py, s->rgb);
        else fill(img, px, py, px + 1, py + 1, s->rgb);
        if (s->markers || s->n == 1) fill(img, px - 2, py - 2, px + 2, py + 2, s->rgb);
        qx = px; qy = py; have_prev = 1;
    }
}

int plot_render(plot_image_t *img, plot_frame_t *fr, const plot_cfg_t *cfg,
                const plot_series_t *s, int ns, char *err)
{
    memset(img, 0, sizeof *img);
    if (cfg->width < 160 || cfg->height < 120 || cfg->width > 8192 || cfg->height > 8192)
        return set_err(err, "plot: size %dx%d outside 160x120 .. 8192x8192", cfg->width, cfg->height);
    if (ns < 1 || ns > PLOT_MAX_SERIES) return set_err(err, "plot: %d series (1..%d)", ns, PLOT_MAX_SERIES);
    int has_left, has_right;
    double xs, ls, rs;
    memset(fr, 0, sizeof *fr);
    if (!data_ranges(s, ns, &fr->xlo, &fr->xhi, &fr->llo, &fr->lhi, &has_left, &has_right))
        return set_err(err, "plot: no finite point to draw");
    if (has_right && !(cfg->right_hi > cfg->right_lo))
        return set_err(err, "plot: right axis range [%g, %g] is empty", cfg->right_lo, cfg->right_hi);
    nice_range(&fr->xlo, &fr->xhi, &xs);
    nice_range(&fr->llo, &fr->lhi, &ls);
    fr->rlo = has_right ? cfg->right_lo : 0;
    fr->rhi = has_right ? cfg->right_hi : 1;
    rs = nice_step(fr->rhi - fr->rlo, 5);
    fr->x0 = 66;
    fr->x1 = cfg->width - (has_right ? 52 : 16);
    fr->y0 = 34;
    fr->y1 = cfg->height - 36;

    img->w = cfg->width;
    img->h = cfg->height;
    img->rgb = xmalloc((size_t)img->w * img->h * 3);
    memset(img->rgb, 255, (size_t)img->w * img->h * 3);
    draw_axes(img, fr, xs, ls, rs, has_right);
    for (int k = 0; k < ns; k++) draw_series(img, fr, &s[k]);

    if (cfg->title) plot_text(img, fr->x0, 4, cfg->title, BLACK, 2);
    if (cfg->left_label) plot_text(img, 4, 22, cfg->left_label, BLACK, 1);
    if (cfg->right_label && has_right)
        plot_text(img, cfg->width - 4 - (int)strlen(cfg->right_label) * 6, 22, cfg->right_label, BLACK, 1);
    if (cfg->xlabel)
        plot_text(img, (fr->x0 + fr->x1) / 2 - (int)strlen(cfg->xlabel) * 3, cfg->height - 12, cfg->xlabel, BLACK, 1);
    int lx = fr->x1 - 4;                                // legend: right to left along the top
    for (int k = ns - 1; k >= 0; k--) {
        if (!s[k].label) continue;
        int tw = (int)strlen(s[k].label) * 6;
        lx -= tw;
        plot_text(img, lx, 8, s[k].label, BLACK, 1);
        fill(img, lx - 16, 10, lx - 4, 12, s[k].rgb);
        lx -= 28;
    }
    return 0;
}

void plot_image_free(plot_image_t *img)
{
    free(img->rgb);
    img->rgb = NULL;
}

// libpng reports errors by longjmp; keep the message for set_err.
static void png_err(png_structp png, png_const_charp msg)
{
    char *buf = png_get_error_ptr(png);
    snprintf(buf, ERR_LEN, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static int fsync_dir_of(const char *path, char *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return set_err(err, "%s: cannot open its directory: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc ? set_err(err, "%s: fsync of the directory: %s", path, strerror(errno)) : 0;
}

static int write_png_file(FILE *f, const plot_image_t *img, char *msg)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, msg, png_err, png_warn);
    if (!png) return set_err(msg, "png_create_write_struct failed");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return set_err(msg, "png_create_info_struct failed");
    }
    if (setjmp(png_jmpbuf(png))) {                      // png_err landed here; msg holds why
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < img->h; y++) png_write_row(png, img->rgb + (size_t)y * img->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int plot_write_png(const char *path, const plot_image_t *img, char *err)
{
    char tmp[4096], msg[ERR_LEN] = "";
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return set_err(err, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return set_err(err, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = write_png_file(f, img, msg);
    if (rc == 0 && fflush(f) != 0) rc = set_err(msg, "write: %s", strerror(errno));
    if (rc == 0 && fsync(fileno(f)) != 0) rc = set_err(msg, "fsync: %s", strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = set_err(msg, "close: %s", strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0) rc = set_err(msg, "rename: %s", strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return set_err(err, "%s: %s", path, msg);
    }
    return fsync_dir_of(path, err);
}

int plot_png(const char *path, const plot_cfg_t *cfg, const plot_series_t *s, int ns, char *err)
{
    plot_image_t img;
    plot_frame_t fr;
    if (plot_render(&img, &fr, cfg, s, ns, err)) return -1;
    int rc = plot_write_png(path, &img, err);
    plot_image_free(&img);
    return rc;
}
