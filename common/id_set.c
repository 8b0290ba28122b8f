/*
id_set.c -- see id_set.h. Linear probing, grown to keep the load under one half.
*/
#include "id_set.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *id)
{
    uint64_t h = 1469598103934665603ull;            // FNV-1a, 64 bits
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return h ? h : 1;
}

static size_t find(const id_set_t *s, uint64_t h)
{
    size_t i = (size_t)h & (s->cap - 1);
    while (s->slot[i] && s->slot[i] != h) i = (i + 1) & (s->cap - 1);
    return i;
}

int id_set_has(const id_set_t *s, const char *id)
{
    if (!s->cap) return 0;
    uint64_t h = hash(id);
    return s->slot[find(s, h)] == h;
}

void id_set_add(id_set_t *s, const char *id)
{
    if (2 * (s->n + 1) > s->cap) {
        id_set_t g = { .cap = s->cap ? 2 * s->cap : 64 };
        g.slot = xcalloc(g.cap, sizeof *g.slot);
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) { g.slot[find(&g, s->slot[i])] = s->slot[i]; g.n++; }
        free(s->slot);
        *s = g;
    }
    uint64_t h = hash(id);
    size_t i = find(s, h);
    if (!s->slot[i]) { s->slot[i] = h; s->n++; }
}

void id_set_free(id_set_t *s)
{
    free(s->slot);
    memset(s, 0, sizeof *s);
}
