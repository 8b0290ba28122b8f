/*
ckpt_verify.c -- load native checkpoints fully, as a resuming trainer would (tests/cpu/test_faults.sh,
test_disk_full.sh): checksum, header, model configuration, parameter table, params, Adam m and v.
  ckpt_verify FILE.ckpt...
Prints one line per file: "FILE step S total T lr L adam A params N finite" and exits 0 when every
file loads and its parameters are finite; otherwise names the file and the problem and exits 1.
*/
#include "checkpoint.h"
#include "check.h"
#include "model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int verify(const char *path)
{
    char err[ERR_LEN];
    ckpt_state_t st;
    if (ckpt_read_state(path, &st, err)) { fprintf(stderr, "ckpt_verify: %s\n", err); return -1; }
    model_t m;
    if (model_describe(&m, &st.cfg, err)) { fprintf(stderr, "ckpt_verify: %s: %s\n", path, err); return -1; }
    size_t n = m.table.numel;
    float *p = xmalloc(n * sizeof(float)), *am = xmalloc(n * sizeof(float)), *av = xmalloc(n * sizeof(float));
    int rc = ckpt_read(path, &m, p, am, av, &st, err);
    if (rc) fprintf(stderr, "ckpt_verify: %s\n", err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!isfinite(p[i]) || !isfinite(am[i]) || !(av[i] >= 0)) {
            fprintf(stderr, "ckpt_verify: %s: value %zu of params/Adam state is not finite (or v < 0)\n", path, i);
            rc = -1;
        }
    if (rc == 0)
        printf("%s step %ld total %ld lr %g adam %ld params %zu finite\n", path, st.step, st.total_steps,
               st.base_lr, st.adam_step, n);
    free(p); free(am); free(av);
    model_free(&m);
    return rc;
}

int main(int argc, char **argv)
{
    log_set_name("ckpt_verify");
    if (argc < 2) { fprintf(stderr, "usage: ckpt_verify FILE.ckpt...\n"); return 2; }
    int bad = 0;
    for (int i = 1; i < argc; i++) bad |= verify(argv[i]) != 0;
    return bad;
}
