/*
plot.h -- a small line-plot rasteriser for the training-curve picture (RUN/curves.png): axes,
ticks with numeric labels in a built-in 5x7 bitmap font, up to PLOT_MAX_SERIES series drawn
against a left axis (auto-ranged, e.g. loss) or a right axis (fixed range, e.g. Dice 0..1), a
legend, and PNG output through libpng. No anti-aliasing: lines are 2 pixels wide, markers 5x5.
plot_px() is the exact data -> pixel mapping the renderer uses, so a test can find the lines.
*/
#ifndef SRM_PLOT_H
#define SRM_PLOT_H
#include <stdint.h>

#define PLOT_MAX_SERIES 4

typedef struct {
    const double *x, *y;        // (n) points; a NaN y breaks the line there
    int n;
    const char *label;          // legend text (letters print as capitals; NULL: none)
    uint8_t rgb[3];
    int right_axis;             // 1: plotted against the right axis
    int markers;                // 1: a 5x5 square at each point (sparse series)
} plot_series_t;

typedef struct {
    int width, height;          // pixels; at least 160 x 120
    const char *title, *xlabel, *left_label, *right_label;   // NULL: none
    double right_lo, right_hi;  // right axis range (used when a series is on the right)
} plot_cfg_t;

typedef struct {
    int x0, y0, x1, y1;         // plot area, inclusive pixels; y0 is the top row
    double xlo, xhi, llo, lhi, rlo, rhi;   // data ranges of the x, left and right axes
} plot_frame_t;

typedef struct {
    int w, h;
    uint8_t *rgb;               // (h, w, 3), row-major; owned (plot_image_free)
} plot_image_t;

// Draw the series into a new image; fr receives the mapping used. 0, or -1 with err (ERR_LEN)
// for a bad size, too many series or no finite point at all.
int plot_render(plot_image_t *img, plot_frame_t *fr, const plot_cfg_t *cfg,
                const plot_series_t *s, int ns, char *err);
void plot_image_free(plot_image_t *img);

// Pixel of data point (x, y) on the left (right = 0) or right axis, rounded to the nearest.
void plot_px(const plot_frame_t *fr, int right, double x, double y, int *px, int *py);

// Write img as an 8-bit RGB PNG: path.tmp, fsync, rename, fsync of the directory. 0 or -1 + err.
int plot_write_png(const char *path, const plot_image_t *img, char *err);

// plot_render + plot_write_png.
int plot_png(const char *path, const plot_cfg_t *cfg, const plot_series_t *s, int ns, char *err);

// Text in the built-in font at scale (1: 6 px per character, 7 px high) with its top-left at
// (x, y); pixels outside the image are clipped. Returns the width drawn in pixels.
int plot_text(plot_image_t *img, int x, int y, const char *text, const uint8_t rgb[3], int scale);

#endif
