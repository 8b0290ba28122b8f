/* params.c -- the parameter table of params.h: a growable array with linear lookup by name
   (a few hundred entries, looked up only when loading files). */
#include "params.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void param_table_init(param_table_t *t)
{
    memset(t, 0, sizeof *t);
}

void param_table_free(param_table_t *t)
{
    free(t->items);
    memset(t, 0, sizeof *t);
}

size_t param_table_add(param_table_t *t, const char *name, int ndim, const int *shape)
{
    ASSERT(strlen(name) < PARAM_NAME_MAX && ndim >= 1 && ndim <= PARAM_NDIM_MAX);
    ASSERT(param_table_find(t, name) == NULL);
    if (t->count == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->items = xrealloc(t->items, (size_t)t->cap * sizeof *t->items);
    }
    param_t *p = &t->items[t->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        ASSERT(shape[i] > 0);
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->offset = t->numel;
    t->numel += p->numel;
    return p->offset;
}

const param_t *param_table_find(const param_table_t *t, const char *name)
{
    for (int i = 0; i < t->count; i++)
        if (strcmp(t->items[i].name, name) == 0) return &t->items[i];
    return NULL;
}

void param_shape_str(const param_t *p, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < p->ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", i ? ", " : "", p->shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}
