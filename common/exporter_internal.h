/*
exporter_internal.h -- state and module functions of srm-exporter (exporter.h is the public side).
  exporter_fs.c       durable file primitives: temp name, fsync, rename, directory fsync, sidecars
  exporter_ckpt.c     filing checkpoints, latest/best links, retention, start-up recovery, reading back
  exporter_metrics.c  metrics.jsonl lines, best selection, curves.png
  exporter_pred.c     prediction volumes -> NIfTI
  exporter_serve.c    the ROUTER loop: receive, dispatch, reply
*/
#ifndef SRM_EXPORTER_INTERNAL_H
#define SRM_EXPORTER_INTERNAL_H
#include "exporter.h"
#include "wire.h"
#include "wire_msgs.h"
#include <stddef.h>
#include <stdint.h>

#define EXPORTER_PATH 4096              // any file path
#define EXPORTER_DIR  3200              // the run's directories: room left for the file names
#define EXPORTER_MAX_PENDING 64         // evaluated steps whose checkpoint has not arrived yet
#define EXPORTER_MAX_POINTS 20000       // per curve; older points are thinned beyond this

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
    int have_best;                  // best.ckpt points at best_step (dice best_dice)
    uint64_t best_step;
    double best_dice;
    int npending;
    exporter_point_t pending[EXPORTER_MAX_PENDING];
    exporter_curve_t loss, dice;    // training loss and validation mean Dice against step
    int curves_dirty;
    double curves_time;             // monotonic seconds of the last refresh
    long n_ckpt, n_metrics, n_pred, n_rejected;
} exporter_t;

// ---- exporter_fs.c -----------------------------------------------------------------------------
// Write n bytes to dir/name through dir/name.tmp: write, fsync, rename. The directory is NOT
// fsync'ed (callers batch that). On failure the temp file is removed.
int fs_write_atomic(const char *dir, const char *name, const void *data, size_t n, char *err);
// The two halves: dir/name.tmp written and fsync'ed (removed on failure); then renamed to dir/name.
int fs_write_tmp(const char *dir, const char *name, const void *data, size_t n, char *err);
int fs_commit(const char *dir, const char *name, char *err);
int fs_fsync_dir(const char *dir, char *err);
// dir/name -> target (relative), replaced atomically via dir/name.tmp.
int fs_symlink_atomic(const char *dir, const char *name, const char *target, char *err);
// dir/name.sha256 = "<hex>  <name>\n" (atomic).
int fs_write_sidecar(const char *dir, const char *name, const char hex[65], char *err);
// Read dir/name.sha256 and check it names `name`; hex receives its digest.
int fs_read_sidecar(const char *dir, const char *name, char hex[65], char *err);
int fs_sha256_file(const char *path, char hex[65], char *err);
// Read a whole file of at most max bytes into a malloc'd buffer.
int fs_read_file(const char *path, uint8_t **data, size_t *n, size_t max, char *err);
int fs_mkdir_p(const char *path, char *err);
// Remove the temporary files a crash left in dir (NAME.tmp, STEM.tmpPID.nii.gz); returns how many.
int fs_remove_tmp(const char *dir);
int fs_exists(const char *path);
double fs_now(void);                // CLOCK_MONOTONIC seconds

// ---- exporter_ckpt.c ---------------------------------------------------------------------------
// File a verified checkpoint blob (its sha256 already checked by the decoder). 0 or -1 + err;
// on failure nothing of this attempt remains on disk.
int exporter_ckpt_store(exporter_t *ex, uint64_t step, const uint8_t *blob, size_t n,
                        const char sha[65], char *err);
// Read back step's checkpoint (step == UINT64_MAX: the latest), verified against its sidecar.
int exporter_ckpt_load(exporter_t *ex, uint64_t step, uint8_t **blob, size_t *n, uint64_t *got_step,
                       char sha[65], char *err);
// Start-up: remove temp files and incomplete steps, find latest and best.
int exporter_ckpt_recover(exporter_t *ex, char *err);
// An evaluation of `step` scored `dice`: link best to it if it wins and its checkpoint exists,
// else remember it until that checkpoint arrives.
void exporter_best_offer(exporter_t *ex, uint64_t step, double dice);
void exporter_ckpt_name(char *out, size_t cap, uint64_t step, const char *ext);

// ---- exporter_metrics.c ------------------------------------------------------------------------
int exporter_metrics(exporter_t *ex, const wire_msg_t *m, char *err);
// Re-read metrics.jsonl (curves, best Dice); trims a torn last line.
int exporter_metrics_recover(exporter_t *ex, char *err);
// Write curves.png when dirty and (force or the interval has passed).
void exporter_curves_refresh(exporter_t *ex, int force);
void exporter_curves_free(exporter_t *ex);

// ---- exporter_pred.c ---------------------------------------------------------------------------
// Write a prediction volume; *case_id receives its (checked) id for the reply.
int exporter_prediction(exporter_t *ex, const wire_msg_t *m, char case_id[WIRE_ID_LEN], char *err);

#endif
