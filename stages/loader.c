/*
loader.c -- srm-loader: reads a dataset, preprocesses each case once through the disk cache and
PUSHes `volume` messages to the augmenters forever, in a per-epoch shuffled order; serves
validation cases on a ROUTER socket. Logic: common/loader_*.c. Stops cleanly on SIGINT/SIGTERM.
*/
#include "loader.h"
#include "check.h"
#include <stdio.h>

int main(int argc, char **argv)
{
    char err[ERR_LEN];
    loader_cfg_t cfg;
    log_set_name("loader");
    int rc = loader_parse(&cfg, argc, argv, err);
    if (rc) {
        if (rc < 0) log_msg('E', "%s", err);
        loader_usage(rc < 0 ? stderr : stdout);
        return rc < 0 ? STAGE_EXIT_CONFIG : 0;
    }
    stage_t *st = stage_new("loader");
    loader_t L;
    rc = loader_open(&L, &cfg, st, err);
    if (rc == 0) rc = loader_run(&L, err);
    const int config = rc == -2;            // bad settings, or no case of the split can be used
    if (rc) log_msg('E', "%s", err);
    else if (stage_signal(st)) log_msg('I', "stopping on signal %d", stage_signal(st));
    loader_close(&L);
    stage_destroy(&st);
    return config ? STAGE_EXIT_CONFIG : rc ? 1 : 0;
}
