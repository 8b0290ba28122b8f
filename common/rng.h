/*
rng.h -- small seedable random generator (xoshiro256** seeded through splitmix64).
Deterministic across machines: the same seed gives the same stream everywhere. One rng_t per
purpose (init, augmentation, shuffling) so that streams do not disturb each other.
The state is 4 words and can be saved in a checkpoint and restored exactly.
*/
#ifndef SRM_RNG_H
#define SRM_RNG_H
#include <stdint.h>
#include <stddef.h>

typedef struct { uint64_t s[4]; } rng_t;

rng_t    rng_seed(uint64_t seed);
// A stream derived from (seed, a, b): e.g. (augment seed, volume index, sample index).
rng_t    rng_derive(uint64_t seed, uint64_t a, uint64_t b);
uint64_t rng_u64(rng_t *r);
double   rng_uniform(rng_t *r);                 // [0, 1)
float    rng_uniformf(rng_t *r, float lo, float hi);
uint64_t rng_below(rng_t *r, uint64_t n);       // [0, n), unbiased; n > 0
double   rng_normal(rng_t *r);                  // standard normal (Box-Muller)
void     rng_fill_uniform(rng_t *r, float *x, size_t n, float lo, float hi);
void     rng_fill_normal(rng_t *r, float *x, size_t n, float mean, float std);

#endif
