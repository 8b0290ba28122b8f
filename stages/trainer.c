/*
trainer.c -- srm-trainer: trains SegResMamba on patch batches from the augmenters (issue 6).
  srm-trainer --describe [--model M|P|R|no-tom] [--preset tiny|demo|full] [--width W]
              [--in-channels N] [--classes K]
prints one line per parameter "name [d0, d1, ...]" and a last line "parameters N" (issue 4);
any other invocation trains (see --help). The logic is in common/trainer_*.c (trainer.h).
*/
#include "trainer.h"
#include "check.h"
#include <stdio.h>

int main(int argc, char **argv)
{
    log_set_name("trainer");
    char err[ERR_LEN];
    static trainer_cfg_t cfg;
    int rc = trainer_parse_args(&cfg, argc, argv, err);
    if (rc == 1) return 0;
    if (rc < 0) {
        log_msg('E', "%s", err);
        trainer_usage(stderr);
        return TRAINER_EXIT_CONFIG;
    }
    if (cfg.describe) rc = trainer_describe(&cfg.model, err);
    else rc = trainer_run(&cfg, err);
    if (rc) { log_msg('E', "%s", err); return rc == TRAINER_EXIT_CONFIG || rc == TRAINER_EXIT_NOT_DURABLE ? rc : 1; }
    return 0;
}
