/*
test_patch_convert.c -- srm-augmenter's --image-dtype narrowing (common/patch_convert.c): f16
agrees bit for bit with the scalar round-to-nearest-even conversion of the case cache (so the
F16C path, when the CPU has it, rounds the same way), values past f16's range are clamped to
+-65504 and counted, bf16 is round-to-nearest-even of the float's upper half (ties to even, NaN
kept), and both round-trip within their precision (2^-11 and 2^-8 relative).
*/
#include "test.h"
#include "patch_stream.h"
#include "case_cache.h"
#include "rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_f16(void)
{
    enum { N = 100003 };                    // odd: exercises the scalar tail after the 8-wide loop
    float *x = malloc(N * sizeof *x);
    uint16_t *y = malloc(N * sizeof *y);
    rng_t r = rng_seed(7);
    for (int i = 0; i < N; i++) {
        double u = rng_uniform(&r);
        // normalised intensities, tiny values (f16 subnormals), and a few exact ties
        x[i] = i % 3 == 0 ? (float)(8 * u - 4) : i % 3 == 1 ? (float)((u - 0.5) * 1e-5) : (float)((i % 2048) + 0.5) / 1024.0f;
    }
    long clamped = patch_images_convert(x, y, N, WIRE_F16);
    int mismatch = 0, worst = -1;
    double maxrel = 0;
    for (int i = 0; i < N; i++) {
        if (y[i] != cache_f32_to_f16(x[i])) { mismatch++; if (worst < 0) worst = i; }
        double back = cache_f16_to_f32(y[i]);
        if (fabs(x[i]) > 6.2e-5) maxrel = fmax(maxrel, fabs(back - x[i]) / fabs(x[i]));   // normal range
    }
    EXPECT(clamped == 0, "no value was out of range, %ld clamped", clamped);
    EXPECT(mismatch == 0, "%d f16 values differ from the scalar conversion (first x=%.9g: %04x vs %04x)", mismatch,
           worst >= 0 ? x[worst] : 0.0, worst >= 0 ? y[worst] : 0, worst >= 0 ? cache_f32_to_f16(x[worst]) : 0);
    EXPECT(maxrel <= 1.0 / 2048 + 1e-12, "f16 round trip relative error %.3g > 2^-11", maxrel);

    float big[9] = { 65504.0f, 65519.0f, 65520.0f, -70000.0f, 1e30f, -INFINITY, INFINITY, NAN, 1.0f };
    uint16_t hb[9];
    clamped = patch_images_convert(big, hb, 9, WIRE_F16);
    EXPECT(hb[0] == 0x7bff && hb[1] == 0x7bff, "65504 and 65519 are the largest f16 (%04x %04x)", hb[0], hb[1]);
    EXPECT(hb[2] == 0x7bff && hb[3] == 0xfbff && hb[4] == 0x7bff && hb[5] == 0xfbff && hb[6] == 0x7bff,
           "overflow clamps to +-65504 (%04x %04x %04x %04x %04x)", hb[2], hb[3], hb[4], hb[5], hb[6]);
    EXPECT(clamped == 5, "5 clamped values counted, got %ld", clamped);
    EXPECT((hb[7] & 0x7c00) == 0x7c00 && (hb[7] & 0x3ff), "NaN stays NaN (%04x)", hb[7]);
    EXPECT(hb[8] == 0x3c00, "1.0 -> 0x3c00 (%04x)", hb[8]);
    free(x);
    free(y);
}

static void test_bf16(void)
{
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins (1.0); 1 + 3*2^-8 -> 1 + 2^-6.
    float x[6] = { 1.0f, bits_f(0x3f808000u), bits_f(0x3f818000u), bits_f(0x3f808001u), -2.5f, NAN };
    uint16_t y[6];
    EXPECT(patch_images_convert(x, y, 6, WIRE_BF16) == 0, "bf16 clamps nothing");
    EXPECT(y[0] == 0x3f80 && y[1] == 0x3f80 && y[2] == 0x3f82 && y[3] == 0x3f81,
           "round to nearest even: %04x %04x %04x %04x", y[0], y[1], y[2], y[3]);
    EXPECT(y[4] == 0xc020, "-2.5 -> c020 (%04x)", y[4]);
    EXPECT((y[5] & 0x7f80) == 0x7f80 && (y[5] & 0x7f), "NaN stays NaN (%04x)", y[5]);
    rng_t r = rng_seed(3);
    double maxrel = 0;
    for (int i = 0; i < 10000; i++) {
        float v = (float)(rng_uniform(&r) * 20 - 10);
        uint16_t h;
        patch_images_convert(&v, &h, 1, WIRE_BF16);
        uint32_t u = (uint32_t)h << 16;
        if (v != 0) maxrel = fmax(maxrel, fabs(bits_f(u) - v) / fabs(v));
    }
    EXPECT(maxrel <= 1.0 / 256 + 1e-12, "bf16 round trip relative error %.3g > 2^-8", maxrel);
}

static void test_f32(void)
{
    float x[3] = { 1.5f, -0.0f, 3e38f }, y[3];
    EXPECT(patch_images_convert(x, y, 3, WIRE_F32) == 0 && !memcmp(x, y, sizeof x), "f32 is a plain copy");
}

int main(void)
{
    test_f16();
    test_bf16();
    test_f32();
    return test_summary();
}
