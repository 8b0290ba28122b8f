/*
params.h -- every learnable tensor of the model lives in ONE contiguous buffer; this table says
where (name, shape, offset, numel). The same table describes the parameters, their gradients,
Adam's m and v, the safetensors export and the native checkpoint. Only model_describe()
(model_desc.c) adds entries. Offsets and counts are in elements, so one table serves float and
double buffers alike.
*/
#ifndef SRM_PARAMS_H
#define SRM_PARAMS_H
#include <stddef.h>

#define PARAM_NAME_MAX 96
#define PARAM_NDIM_MAX 5
#define PARAM_NONE ((size_t)-1)     // "no such tensor" (a conv without bias)

typedef struct {
    char name[PARAM_NAME_MAX];      // state_dict-style, e.g. "vit.gscs.0.proj.weight"
    int ndim;
    int shape[PARAM_NDIM_MAX];
    size_t offset;                  // elements from the start of the buffer
    size_t numel;
} param_t;

typedef struct {
    param_t *items;
    int count, cap;
    size_t numel;                   // total elements of the buffer
} param_table_t;

void param_table_init(param_table_t *t);
void param_table_free(param_table_t *t);
// Append a tensor; returns its offset. Names must be unique and shorter than PARAM_NAME_MAX
// (ASSERTed: they come from our own code).
size_t param_table_add(param_table_t *t, const char *name, int ndim, const int *shape);
const param_t *param_table_find(const param_table_t *t, const char *name);   // NULL if absent
// "[d0, d1, ...]" into buf (at least 64 bytes).
void param_shape_str(const param_t *p, char *buf, size_t len);

#endif
