/*
mt19937.h -- numpy's legacy random stream (np.random.RandomState(seed)), bit for bit: the
Mersenne Twister seeded as numpy seeds it from an integer, its bounded integers, and its shuffle.
Only for reproducing splits that nnU-Net draws with it (sklearn's KFold(shuffle=True,
random_state=12345) calls RandomState(12345).shuffle); the project's own randomness is rng.h.
Written here because no packaged C library reproduces numpy's seeding and interval draws together.
*/
#ifndef SRM_MT19937_H
#define SRM_MT19937_H
#include <stdint.h>

typedef struct { uint32_t key[624]; int pos; } mt19937_t;

void mt19937_seed(mt19937_t *s, uint32_t seed);          // numpy's seeding from an integer
uint32_t mt19937_next(mt19937_t *s);
// numpy's random_interval: uniform in [0, max], by masked draws rejected above max (max < 2^32)
uint32_t mt19937_interval(mt19937_t *s, uint32_t max);
// RandomState.shuffle of a 1-D array of n ints, in place
void mt19937_shuffle(mt19937_t *s, int *x, int n);

#endif
