/*
id_set.h -- a growing set of message ids (strings), kept as 64-bit FNV-1a hashes in an
open-addressing table. The exporter remembers which `id`s it has already filed, so a message
sent again (its acknowledgement was lost) is acknowledged without being filed twice. Two
different ids collide with probability ~n^2 / 2^65: negligible for the lines of one run.
*/
#ifndef SRM_ID_SET_H
#define SRM_ID_SET_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *slot;                 // 0 = empty (a hash of 0 is stored as 1)
    size_t n, cap;                  // cap: a power of two, or 0
} id_set_t;

int id_set_has(const id_set_t *s, const char *id);
void id_set_add(id_set_t *s, const char *id);       // no-op when present
void id_set_free(id_set_t *s);

#endif
