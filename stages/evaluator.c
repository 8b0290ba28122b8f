/*
evaluator.c -- srm-evaluator: scores SegResMamba checkpoints and segments images.
  file mode:    srm-evaluator --model FILE (--images F... [--labels F...] | --dataset DIR) [--out DIR]
  service mode: srm-evaluator --jobs EP --cases EP [--exporter EP] [--metrics EP]
Everything is in common/evaluator_*.c (see evaluator.h); main() parses, dispatches and maps the
outcome to the exit status: 0 all done, 1 nothing could run, 2 some cases failed (file mode);
service mode with bad arguments: 78 (sysexits' EX_CONFIG: train.sh does not restart it).
*/
#include "evaluator.h"
#include "check.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    log_set_name("evaluator");
    static eval_cfg_t cfg;      // static: the file lists make it large
    char err[ERR_LEN];
    int rc = eval_parse(&cfg, argc, argv, err);
    if (rc == 1) { eval_usage(stdout); return 0; }
    if (rc < 0) {
        log_msg('E', "%s", err);
        eval_usage(stderr);
        for (int i = 1; i < argc; i++)      // a service (--jobs) that cannot start: no restart helps
            if (!strcmp(argv[i], "--jobs")) return EVAL_EXIT_CONFIG;
        return 1;
    }
    if (!cfg.jobs_ep) {
        rc = eval_run_files(&cfg, err);
        if (rc < 0) log_msg('E', "%s", err);
        else if (rc > 0) log_msg('W', "%d case(s) failed (listed above)", rc);
        return rc < 0 ? 1 : rc > 0 ? 2 : 0;
    }
    stage_t *st = stage_new("evaluator");
    rc = eval_run_service(&cfg, st, err);
    if (rc < 0) log_msg('E', "%s", err);
    stage_destroy(&st);
    return rc < 0 ? 1 : 0;
}
