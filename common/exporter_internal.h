/*
exporter_internal.h -- state and module functions of srm-exporter (exporter.h is the public side).
  durable_fs.c        (durable_fs.h) the durable file primitives it builds on
  exporter_ckpt.c     filing checkpoints, latest/best links, retention, start-up recovery, reading back
  exporter_metrics.c  metrics.jsonl lines, best selection, curves.png
  exporter_pred.c     prediction volumes -> NIfTI
  exporter_serve.c    the ROUTER loop: receive, dispatch, reply
*/
#ifndef SRM_EXPORTER_INTERNAL_H
#define SRM_EXPORTER_INTERNAL_H
#include "durable_fs.h"
#include "exporter.h"
#include "id_set.h"
#include "wire.h"
#include "wire_msgs.h"
#include <stddef.h>
#include <stdint.h>

#define EXPORTER_PATH 4096              // any file path
#define EXPORTER_DIR  3200              // the run's directories: room left for the file names
#define EXPORTER_MAX_PENDING 64         // evaluated steps whose checkpoint has not arrived yet
#define EXPORTER_MAX_POINTS 20000       // per curve; older points are thinned beyond this
#define EXPORTER_RCV_QUEUE 1000         // messages queued from one peer (stage.h hwm): see exporter_serve.c

typedef struct { uint64_t step; double value; } exporter_point_t;

typedef struct {
    exporter_point_t *p;
    int n, cap;
} exporter_curve_t;

typedef struct {
    exporter_cfg_t cfg;
    char run[EXPORTER_DIR - 64], ckpt_dir[EXPORTER_DIR], pred_dir[EXPORTER_DIR];
    char metrics_path[EXPORTER_DIR], curves_path[EXPORTER_DIR];
    int have_latest;
    uint64_t latest_step;
    int have_scored;                // an evaluator's metrics arrived (also read back at start-up),
    uint64_t scored_upto;           // the highest step among them: no marker at or below it
    int have_best;                  // best.ckpt points at best_step (dice best_dice)
    uint64_t best_step;
    double best_dice;
    int npending;
    exporter_point_t pending[EXPORTER_MAX_PENDING];
    exporter_curve_t loss, dice;    // training loss and validation mean Dice against step
    id_set_t filed;                 // ids of the messages filed: metrics.jsonl's, and this run's predictions
    int curves_dirty;
    double curves_time;             // monotonic seconds of the last refresh
    long n_ckpt, n_metrics, n_pred, n_rejected;
} exporter_t;

// ---- exporter_ckpt.c ---------------------------------------------------------------------------
// File a verified checkpoint blob (its sha256 already checked by the decoder). 0 or -1 + err;
// on failure nothing of this attempt remains on disk. validated: an eval job of the step was
// sent; it is kept (step-N.awaiting) until exporter_scored releases it.
int exporter_ckpt_store(exporter_t *ex, uint64_t step, int validated, const uint8_t *blob, size_t n,
                        const char sha[65], char *err);
// Read back step's checkpoint (step == UINT64_MAX: the latest, falling back to the newest intact
// step when it is damaged), verified against its sidecar. 0; -1 + err when there is none; -2 +
// err when it (or every one, for latest) is damaged.
int exporter_ckpt_load(exporter_t *ex, uint64_t step, uint8_t **blob, size_t *n, uint64_t *got_step,
                       char sha[65], char *err);
// Start-up: remove temp files and incomplete steps, find latest and best.
int exporter_ckpt_recover(exporter_t *ex, char *err);
// An evaluation of `step` scored `dice`: link best to it if it wins and its checkpoint exists,
// else remember it until that checkpoint arrives.
void exporter_best_offer(exporter_t *ex, uint64_t step, double dice);
// The evaluator's metrics of `step` arrived: no score will come for an earlier awaiting step.
void exporter_scored(exporter_t *ex, uint64_t step);
void exporter_ckpt_name(char *out, size_t cap, uint64_t step, const char *ext);

// ---- exporter_metrics.c ------------------------------------------------------------------------
// Append one metrics message as a line of metrics.jsonl. id: the message's `id` ("" when it has
// none), kept in the line. 0 appended; 1 that id is already filed (nothing written); -1 + err the
// message is invalid; -2 + err it could not be written (a full disk: worth sending again).
int exporter_metrics(exporter_t *ex, const wire_msg_t *m, const char *id, char *err);
// Re-read metrics.jsonl (curves, best Dice, the filed ids); trims a torn last line.
int exporter_metrics_recover(exporter_t *ex, char *err);
// Write curves.png when dirty and (force or the interval has passed).
void exporter_curves_refresh(exporter_t *ex, int force);
void exporter_curves_free(exporter_t *ex);

// ---- exporter_pred.c ---------------------------------------------------------------------------
// Write a prediction volume; *case_id receives its (checked) id for the reply. 0, -1 + err the
// message is invalid, -2 + err the file could not be written.
int exporter_prediction(exporter_t *ex, const wire_msg_t *m, char case_id[WIRE_ID_LEN], char *err);

#endif
