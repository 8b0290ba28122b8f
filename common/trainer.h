/*
trainer.h -- srm-trainer's pieces (issue 6; system.md "Checkpoints"; docs/pipeline.md wiring).
  trainer_args.c    the command line -> trainer_cfg_t (paper recipe as defaults)
  trainer_backend.c one training step on the CPU reference or the GPU (--device)
  trainer_batch.c   validating a received patch_batch and converting it to float
  trainer_ckpt.c    the checkpoint flow: spool file, send, ack, resend, resume
  trainer_report.c  progress line, metrics to the exporter, eval jobs, evaluator metrics
  trainer_loop.c    sockets and the loop tying them together (trainer_run)
*/
#ifndef SRM_TRAINER_H
#define SRM_TRAINER_H
#include <stdint.h>
#include "model.h"

typedef enum { TRAIN_DEV_AUTO = 0, TRAIN_DEV_CPU = 1, TRAIN_DEV_GPU = 2 } train_device_t;

#define TRAIN_REGION_NAME 32

typedef struct {
    int describe;                   // --describe: print the parameter table and exit
    model_cfg_t model;
    train_device_t device;
    train_cfg_t tc;                 // loss + Adam (lr, wd, AdamW switch)
    regions_t regions;              // --regions (tc.regions points here)
    char region_spec[256];          // the --regions text, passed on to the evaluator
    char region_names[REGIONS_MAX][TRAIN_REGION_NAME];
    int patch[3];                   // D, H, W of each patch
    int batch;
    long steps;                     // total steps (schedule length); --epochs x --steps-per-epoch;
                                    // with --max-minutes: a cap (none unless given)
    double max_minutes;             // wall-clock budget from the trainer's start (0: none)
    long val_every, ckpt_every, log_every;
    uint64_t seed;
    int resume;                     // ask the exporter for `latest` (and look in the spool)
    const char *resume_file;        // or resume from this native checkpoint
    const char *prep_file;          // --preprocessing: the loader's settings, kept in checkpoints
    const char *patches_ep, *evaljobs_ep, *metrics_ep, *exporter_ep;
    int allow_remote;
    const char *curve_server, *authorized;      // binding sockets (patches, evaljobs, metrics)
    const char *curve_client, *server_key;      // the exporter connection
    const char *run_id;             // this run's id (train.sh: RUN/run.id): in eval jobs; validation
                                    // metrics that name another run are ignored (NULL: no check)
    int deterministic;
    const char *spool_dir;          // unacknowledged checkpoints live here until acked
    double ack_timeout_s;           // resend an unacknowledged checkpoint after this long
    double exporter_resend_s;       // resend an unacknowledged metrics line after this long
    double final_ack_timeout_s;     // at the end / on SIGINT: wait this long for the last ack
    double final_eval_timeout_s;    // at the end: wait this long for the final validation
    double final_eval_resend_s;     // and offer the final job again this often until it comes
    double resume_timeout_s;        // wait this long for the exporter's `latest` answer
    double batch_timeout_s;         // no batch for this long: log a warning (0: never)
} trainer_cfg_t;

// The --loss name of a loss kind ("dice", "dice-ce", "sigmoid-dice"), as the checkpoints and
// eval jobs carry it.
const char *trainer_loss_name(loss_kind_t k);
// Parse argv. 0, 1 when --help printed the usage, -1 with err.
int trainer_parse_args(trainer_cfg_t *c, int argc, char **argv, char *err);
void trainer_usage(void *file);
// The parameter table, one "name [d0, d1, ...]" line per tensor, then "parameters N".
int trainer_describe(const model_cfg_t *cfg, char *err);
// Train until --steps or SIGINT/SIGTERM (then a final checkpoint).
// Exit status of srm-trainer for a configuration that no restart can cure (bad arguments, or
// for --batch-timeout only batches that disagree with them): sysexits' EX_CONFIG. train.sh
// stops the run on it instead of restarting the trainer.
#define TRAINER_EXIT_CONFIG 78
// The run ended but its final checkpoint is not with the exporter: only in the spool (the exporter
// could not store it), or not written at all (the spool's disk is full too). A supervisor must
// not restart the trainer for it, but say so and fail (EX_TEMPFAIL).
#define TRAINER_EXIT_NOT_DURABLE 75
// trainer_run: 0 when the run ended (steps done, budget spent or stopped by a signal), -1 with
// err on a failure, TRAINER_EXIT_CONFIG with err on a lasting mismatch of the batches,
// TRAINER_EXIT_NOT_DURABLE with err when the exporter did not acknowledge the final checkpoint.
int trainer_run(const trainer_cfg_t *c, char *err);

#endif
