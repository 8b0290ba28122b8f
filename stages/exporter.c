/*
exporter.c -- srm-exporter: files checkpoints (with safetensors exports and sha256 sidecars),
metrics.jsonl, curves.png and predicted NIfTI volumes under a run directory, for the trainer and
the evaluator (exporter.h; the logic is in common/exporter_*.c).
  srm-exporter --run-dir RUN [--bind ENDPOINT] [--keep K] [--every N] [--allow-remote]
               [--curve-server KEYFILE --authorized FILE] [--plot-interval SECONDS]
Exit status: 0 after SIGINT/SIGTERM, 78 on bad arguments or a missing / bad CURVE key file (no
restart cures them), 1 when the run directory or the socket cannot be set up.
*/
#include "exporter.h"
#include "check.h"
#include "stage.h"

int main(int argc, char **argv)
{
    log_set_name("exporter");
    char err[ERR_LEN];
    exporter_cfg_t cfg;
    int rc = exporter_parse_args(&cfg, argc, argv, err);
    if (rc == 1) return 0;
    if (rc < 0) {
        log_msg('E', "%s", err);
        exporter_usage();
        return STAGE_EXIT_CONFIG;               // not restarted: the same arguments would fail again
    }
    rc = exporter_run(&cfg, err);
    if (rc) {
        log_msg('E', "%s", err);
        return rc == -2 ? STAGE_EXIT_CONFIG : 1;
    }
    return 0;
}
