/*
report_raster.c -- the few drawing primitives srm-report's pictures need beyond plot.h: clipped
rectangle fills, (dotted) lines, alpha blending of one pixel, a blank canvas, and a palette of
distinct colours for label values and curve series. Images are plot_image_t (h, w, 3) RGB.
*/
#include "report.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// Tableau-like colours, chosen to stay apart from each other and from grey scan intensities.
static const uint8_t PALETTE[][3] = {
    { 230, 25, 75 },  { 60, 180, 75 },  { 0, 130, 200 },  { 245, 130, 48 }, { 145, 30, 180 },
    { 70, 240, 240 }, { 240, 50, 230 }, { 210, 245, 60 }, { 250, 190, 212 }, { 0, 128, 128 },
    { 220, 190, 255 }, { 170, 110, 40 }, { 255, 225, 25 }, { 128, 0, 0 },    { 170, 255, 195 },
    { 128, 128, 0 },
};
#define NPAL ((int)(sizeof PALETTE / sizeof PALETTE[0]))

const uint8_t *raster_colour(int k)
{
    if (k < 0) k = -k;
    return PALETTE[k % NPAL];
}

int raster_new(plot_image_t *img, int w, int h, char *err)
{
    memset(img, 0, sizeof *img);
    if (w < 1 || h < 1 || w > 16384 || h > 16384) return set_err(err, "image size %dx%d outside 1..16384", w, h);
    img->w = w;
    img->h = h;
    img->rgb = xmalloc((size_t)w * h * 3);
    memset(img->rgb, 255, (size_t)w * h * 3);
    return 0;
}

static void put(plot_image_t *img, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= img->w || y >= img->h) return;
    memcpy(img->rgb + ((size_t)y * img->w + x) * 3, rgb, 3);
}

void raster_fill(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(img, x, y, rgb);
}

void raster_blend(plot_image_t *img, int x, int y, const uint8_t rgb[3], double alpha)
{
    if (x < 0 || y < 0 || x >= img->w || y >= img->h) return;
    uint8_t *p = img->rgb + ((size_t)y * img->w + x) * 3;
    for (int c = 0; c < 3; c++) p[c] = (uint8_t)(p[c] * (1 - alpha) + rgb[c] * alpha + 0.5);
}

// Bresenham, 2 pixels wide (as plot.c's lines); dotted: 3 on, 3 off along the major axis.
void raster_line(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3], int dotted)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy, k = 0;
    for (;;) {
        if (!dotted || (k / 3) % 2 == 0) {
            put(img, x0, y0, rgb);
            put(img, x0 + (dx >= -dy ? 0 : 1), y0 + (dx >= -dy ? 1 : 0), rgb);
        }
        k++;
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}
