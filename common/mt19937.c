/*
mt19937.c -- numpy's legacy MT19937 stream (see mt19937.h): Matsumoto and Nishimura's generator
with the 2002 initialisation numpy uses for integer seeds, and numpy's interval and shuffle.
*/
#include "mt19937.h"

enum { N = 624, M = 397 };

void mt19937_seed(mt19937_t *s, uint32_t seed)
{
    for (int i = 0; i < N; i++) {
        s->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1;
    }
    s->pos = N;
}

static void regenerate(mt19937_t *s)
{
    for (int i = 0; i < N; i++) {
        uint32_t y = (s->key[i] & 0x80000000u) | (s->key[(i + 1) % N] & 0x7fffffffu);
        s->key[i] = s->key[(i + M) % N] ^ (y >> 1) ^ (y & 1 ? 0x9908b0dfu : 0);
    }
    s->pos = 0;
}

uint32_t mt19937_next(mt19937_t *s)
{
    if (s->pos == N) regenerate(s);
    uint32_t y = s->key[s->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

uint32_t mt19937_interval(mt19937_t *s, uint32_t max)
{
    if (max == 0) return 0;
    uint32_t mask = max, v;
    mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16;
    while ((v = mt19937_next(s) & mask) > max) {}
    return v;
}

void mt19937_shuffle(mt19937_t *s, int *x, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)mt19937_interval(s, (uint32_t)i), t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}
