/*
augmenter.c -- srm-augmenter: PULLs volumes from srm-loader, cuts augmented patches and PUSHes
`patch_batch` messages to the trainer. Any number may run, on any host; each connects to both
endpoints. Logic: common/patch_stream.c and common/augment*.c. Stops on SIGINT/SIGTERM.
*/
#include "patch_stream.h"
#include "check.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char err[ERR_LEN];
    patch_cfg_t cfg;
    log_set_name("augmenter");
    // Augmentation scales by processes, many to a host (system.md): one OpenMP thread each (the
    // low-resolution step's resampler is parallel), unless OMP_NUM_THREADS asks for more.
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
    int rc = patch_cfg_parse(&cfg, argc, argv, err);
    if (rc) {
        if (rc < 0) log_msg('E', "%s", err);
        patch_cfg_usage(rc < 0 ? stderr : stdout);
        return rc < 0 ? STAGE_EXIT_CONFIG : 0;
    }
    stage_t *st = stage_new("augmenter");
    rc = patch_stream_run(&cfg, st, err);
    if (rc) log_msg('E', "%s", err);
    else if (stage_signal(st)) log_msg('I', "stopping on signal %d", stage_signal(st));
    stage_destroy(&st);
    return rc == -2 ? STAGE_EXIT_CONFIG : rc ? 1 : 0;
}
