/*
test_plot.c -- the curve plotter: renders a loss curve (left axis) and a Dice curve (right axis,
0..1, markers), writes the PNG, reads it back with libpng and checks the size, that the axis
ranges are the nice ones expected for the data, that each data point's pixel (computed here
from the frame, independently of plot_px) has its series' colour, that segment midpoints are on
the line, that areas away from the data carry no series colour, and the error paths.
*/
#include "plot.h"
#include "check.h"
#include "test.h"
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint8_t RED[3] = { 220, 30, 30 }, BLUE[3] = { 20, 60, 230 };

// Read an 8-bit RGB PNG into a malloc'd (h, w, 3) buffer. NULL on any problem.
static uint8_t *read_png(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile rgb = NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(rgb);
        return NULL;
    }
    png_init_io(png, f);
    png_read_info(png, info);
    if (png_get_color_type(png, info) != PNG_COLOR_TYPE_RGB || png_get_bit_depth(png, info) != 8)
        png_error(png, "not 8-bit RGB");
    *w = (int)png_get_image_width(png, info);
    *h = (int)png_get_image_height(png, info);
    rgb = xmalloc((size_t)*w * *h * 3);
    for (int y = 0; y < *h; y++) png_read_row(png, rgb + (size_t)y * *w * 3, NULL);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    return rgb;
}

static int is(const uint8_t *rgb, int w, int x, int y, const uint8_t c[3])
{
    return memcmp(rgb + ((size_t)y * w + x) * 3, c, 3) == 0;
}

static int near(const uint8_t *rgb, int w, int h, int x, int y, const uint8_t c[3])
{
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++)
            if (x + dx >= 0 && y + dy >= 0 && x + dx < w && y + dy < h && is(rgb, w, x + dx, y + dy, c)) return 1;
    return 0;
}

int main(void)
{
    char err[ERR_LEN], path[512];
    const char *dir = test_tmpdir("plot");
    snprintf(path, sizeof path, "%s/curves.png", dir);

    enum { NL = 11, ND = 4 };
    double lx[NL], ly[NL], dx[ND] = { 25, 50, 75, 100 }, dy[ND] = { 0.25, 0.5, 0.75, 0.875 };
    for (int i = 0; i < NL; i++) { lx[i] = 10.0 * i; ly[i] = 0.9 - 0.07 * i; }   // 0.9 .. 0.2
    plot_series_t s[2] = {
        { .x = lx, .y = ly, .n = NL, .label = "loss", .rgb = { 220, 30, 30 } },
        { .x = dx, .y = dy, .n = ND, .label = "val dice", .rgb = { 20, 60, 230 }, .right_axis = 1, .markers = 1 },
    };
    plot_cfg_t cfg = { .width = 640, .height = 400, .title = "training", .xlabel = "step",
                       .left_label = "loss", .right_label = "dice", .right_lo = 0, .right_hi = 1 };
    plot_image_t img;
    plot_frame_t fr;
    EXPECT(plot_render(&img, &fr, &cfg, s, 2, err) == 0, "%s", err);
    // x data 0..100 -> ticks of 20 -> [0, 100]; loss 0.2..0.9 -> step 0.2 -> [0.2, 1.0]
    EXPECT(fr.xlo == 0 && fr.xhi == 100, "x range [%g, %g]", fr.xlo, fr.xhi);
    EXPECT(fabs(fr.llo - 0.2) < 1e-12 && fabs(fr.lhi - 1.0) < 1e-12, "left range [%g, %g]", fr.llo, fr.lhi);
    EXPECT(fr.rlo == 0 && fr.rhi == 1, "right range");
    EXPECT(fr.x0 > 20 && fr.x1 < 640 - 20 && fr.y0 > 10 && fr.y1 < 400 - 20 && fr.x1 - fr.x0 > 400,
           "plot area %d,%d .. %d,%d", fr.x0, fr.y0, fr.x1, fr.y1);
    EXPECT(plot_write_png(path, &img, err) == 0, "%s", err);
    plot_image_free(&img);

    int w = 0, h = 0;
    uint8_t *rgb = read_png(path, &w, &h);
    EXPECT(rgb && w == 640 && h == 400, "read back %dx%d", w, h);
    if (!rgb) return test_summary();

    int W = fr.x1 - fr.x0, H = fr.y1 - fr.y0, bad = 0;
    for (int i = 0; i < NL; i++) {                      // loss points, drawn first: not under a Dice marker
        int px = fr.x0 + (int)lround(lx[i] / 100.0 * W), py = fr.y1 - (int)lround((ly[i] - 0.2) / 0.8 * H);
        if (!is(rgb, w, px, py, RED) && !near(rgb, w, h, px, py, BLUE)) { bad++; printf("loss point %d at %d,%d\n", i, px, py); }
        if (i + 1 < NL) {
            int mx = fr.x0 + (int)lround((lx[i] + 5) / 100.0 * W);
            int my = fr.y1 - (int)lround(((ly[i] + ly[i + 1]) / 2 - 0.2) / 0.8 * H);
            if (!near(rgb, w, h, mx, my, RED) && !near(rgb, w, h, mx, my, BLUE)) { bad++; printf("loss midpoint %d\n", i); }
        }
    }
    EXPECT(bad == 0, "%d loss pixels are not where the data says", bad);
    bad = 0;
    for (int i = 0; i < ND; i++) {                      // Dice against the right axis 0..1, 5x5 markers
        int px = fr.x0 + (int)lround(dx[i] / 100.0 * W), py = fr.y1 - (int)lround(dy[i] * H);
        for (int ox = -2; ox <= 2; ox++)
            for (int oy = -2; oy <= 2; oy++)
                if (!is(rgb, w, px + ox, py + oy, BLUE)) bad++;
    }
    EXPECT(bad == 0, "%d Dice marker pixels are not where the data says", bad);
    // Below both curves on the left (loss >= 0.62 there, Dice starts at x = 25) nothing is drawn.
    int stray = 0;
    for (int y = fr.y1 - H / 5; y < fr.y1 - 3; y++)
        for (int x = fr.x0 + 3; x < fr.x0 + W / 5; x++)
            stray += is(rgb, w, x, y, RED) || is(rgb, w, x, y, BLUE);
    EXPECT(stray == 0, "%d series pixels in an empty corner", stray);
    int frame = 1;
    for (int y = fr.y0 + H / 2; y <= fr.y1; y++)      // the loss curve starts near the top-left corner
        frame &= is(rgb, w, fr.x0, y, (const uint8_t[3]){ 0, 0, 0 });
    EXPECT(frame, "left edge of the plot area is the black axis");
    int text = 0;                                       // tick labels: dark pixels left of the axis
    for (int y = fr.y0; y <= fr.y1; y++)
        for (int x = 0; x < fr.x0 - 6; x++) text += is(rgb, w, x, y, (const uint8_t[3]){ 0, 0, 0 });
    EXPECT(text > 50, "left tick labels drawn (%d dark pixels)", text);
    free(rgb);

    // Errors: bad size, no finite data, unwritable path (nothing left behind).
    plot_cfg_t small = cfg;
    small.width = 10;
    EXPECT(plot_png(path, &small, s, 2, err) == -1 && strstr(err, "size"), "small: %s", err);
    double nanv[2] = { NAN, NAN };
    plot_series_t empty = { .x = lx, .y = nanv, .n = 2 };
    EXPECT(plot_png(path, &cfg, &empty, 1, err) == -1 && strstr(err, "finite"), "no data: %s", err);
    char bad_path[600];
    snprintf(bad_path, sizeof bad_path, "%s/no/such/dir/c.png", dir);
    EXPECT(plot_png(bad_path, &cfg, s, 2, err) == -1 && strstr(err, "no/such/dir"), "bad path: %s", err);
    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat st;
    EXPECT(stat(tmp, &st) != 0, "no temp file left");
    // Only a left series: the right range is not needed; a single point is drawn as a marker.
    double one_x = 3, one_y = 5;
    plot_series_t single = { .x = &one_x, .y = &one_y, .n = 1, .rgb = { 220, 30, 30 } };
    cfg.right_lo = cfg.right_hi = 0;
    EXPECT(plot_render(&img, &fr, &cfg, &single, 1, err) == 0, "%s", err);
    int px, py;
    plot_px(&fr, 0, one_x, one_y, &px, &py);
    EXPECT(is(img.rgb, img.w, px, py, RED) && is(img.rgb, img.w, px + 2, py - 2, RED), "single point marker");
    plot_image_free(&img);
    return test_summary();
}
