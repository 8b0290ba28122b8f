/*
trainer_internal.h -- what the trainer_*.c files share (not for other stages): the training
backend (CPU reference or GPU), batch intake, the checkpoint flow and the reports. The public
face of the trainer is trainer.h.
*/
#ifndef SRM_TRAINER_INTERNAL_H
#define SRM_TRAINER_INTERNAL_H
#include <limits.h>
#include <stdio.h>
#include "checkpoint.h"
#include "outbox.h"
#include "stage.h"
#include "trainer.h"
#include "wire_msgs.h"

double trainer_now(void);                   // monotonic seconds
double trainer_wall(void);                  // seconds since the Unix epoch

// ---- backend: one training step on the chosen device ----------------------------------------
// The host buffers params/adam_m/adam_v (m->table layout) are the truth between steps on the
// CPU; on the GPU they are refreshed by tb_download (before a checkpoint or an eval job) and
// pushed by tb_upload (after initialisation or a resume).
typedef struct train_backend train_backend_t;
// NULL with err on failure; *lasting set when no restart can mend it (--device gpu on a host
// without a usable GPU).
train_backend_t *tb_open(const trainer_cfg_t *c, const model_t *m, float *params, float *adam_m,
                         float *adam_v, int *lasting, char *err);
const char *tb_device(const train_backend_t *b);          // "cpu" or "gpu"
void tb_upload(train_backend_t *b);
void tb_download(train_backend_t *b);
// One step in two halves so that the next batch is received and decoded while the GPU runs:
// begin takes x: (B, Cin, D, H, W), labels: (B, D, H, W) (both free to be overwritten when it
// returns) and starts the step (the CPU reference runs it whole); end waits for it, returns the
// loss and in *busy_s the seconds the device was busy with it (upload included).
// adam_step: 1-based count of updates incl. this one.
void tb_step_begin(train_backend_t *b, const float *x, const uint8_t *labels, float lr, long adam_step);
double tb_step_end(train_backend_t *b, double *busy_s);
size_t tb_mem_peak(const train_backend_t *b);              // tracked GPU bytes; 0 on the CPU
void tb_close(train_backend_t **b);

// ---- batches ----------------------------------------------------------------------------
// Validate a received message as a patch_batch of the configured shape (batch, in_channels,
// patch), finite images and labels < classes (softmax losses); convert the images to float.
// x: (B, Cin, D, H, W), labels: (B, D, H, W). npos: positive crops. 0, or -1 with err (the
// caller logs it with the peer and drops the batch).
int trainer_batch_take(const trainer_cfg_t *c, const wire_msg_t *msg, float *x, uint8_t *labels,
                       int *npos, char *err);

// ---- checkpoint flow (system.md "Checkpoints: who holds what") ------------------------------
typedef struct {
    const trainer_cfg_t *c;
    const model_t *m;
    void *sock;                     // exporter DEALER, or NULL (checkpoints then stay spooled)
    char spool[PATH_MAX - 64];      // leaves room for the file names under it
    char config_json[1024];         // the run configuration travelling with each checkpoint
    // the newest unacknowledged checkpoint (a file in the spool)
    int have_pending;
    int pending_in_flight;          // the pending file's bytes are the ones in flight (a newer
                                    // save of the same step, e.g. the final one, is not)
    long pending_step;
    int pending_final;
    int pending_validated;          // an eval job of this step goes too: the exporter keeps it until scored
    char pending_path[PATH_MAX];
    // the one in flight (never more than one)
    int in_flight;
    long flight_step;
    char flight_sha[65];
    double flight_sent, next_try;
    const outbox_t *out;            // the metrics outbox on the same connection, or NULL
    uint64_t flight_out_sends;      // its send count when the one in flight went
    long quick_resent;              // the step last sent again for a later message's ack (-1: none)
    long acked_step;                // newest acknowledged step, -1 when none
    long n_sent, n_acked, n_failed;
    int prep_warned;                // the --preprocessing file was reported unusable
} ckpt_flow_t;

// One trainer a spool: take SPOOL/.lock (made with the spool) before anything else of the run --
// a second trainer would resume from and prune the first one's files, and rebind its sockets (a
// previous one still waiting for its final ack gets 90 s to finish). 0 or -1 + err.
int ckpt_flow_lock(const trainer_cfg_t *c, char *err);
int ckpt_flow_open(ckpt_flow_t *f, const trainer_cfg_t *c, const model_t *m, void *exporter_sock,
                   char *err);
// The outbox of the metrics on the same exporter connection (NULL: none): a later message of it
// acknowledged while a checkpoint waits for its ack means the checkpoint was lost: sent again.
void ckpt_flow_set_outbox(ckpt_flow_t *f, const outbox_t *out);
// Write a checkpoint of the host state into the spool; it becomes the pending one (replacing an
// older pending file) and is sent now when nothing is in flight. 0 or -1 with err.
int ckpt_flow_save(ckpt_flow_t *f, const float *params, const float *adam_m, const float *adam_v,
                   const ckpt_state_t *st, int final, int validated, char *err);
// The loader's preprocessing settings (--preprocessing FILE) into st->prep before a save; a file
// missing or invalid leaves st->prep as it was (empty, or the resumed checkpoint's), reported once.
void ckpt_flow_take_prep(ckpt_flow_t *f, ckpt_state_t *st);
// Non-blocking housekeeping between steps: (re)send the pending checkpoint when due.
void ckpt_flow_tick(ckpt_flow_t *f);
// Handle one message that arrived on the exporter socket (acks; errors are logged).
void ckpt_flow_on_message(ckpt_flow_t *f, const wire_msg_t *msg);
// Receive and handle everything waiting on the exporter socket; acks of the metrics lines go to
// out (may be NULL).
void ckpt_flow_drain(ckpt_flow_t *f, outbox_t *out);
// 1 when the newest checkpoint has been acknowledged (nothing pending).
int ckpt_flow_done(const ckpt_flow_t *f);
// Resume: the newer of the exporter's `latest` (when asked) and the spool's newest valid file,
// or c->resume_file. Fills params/m/v and st. 1 resumed, 0 nothing to resume from, -1 with err.
int ckpt_flow_resume(ckpt_flow_t *f, stage_t *st, float *params, float *adam_m, float *adam_v,
                     ckpt_state_t *state, char *err);

// ---- wall-clock budget (--max-minutes; trainer_budget.c) ------------------------------------
typedef struct {
    double budget_s;                // 0: no budget
    double t_start, deadline;       // monotonic seconds
    long cap;                       // --steps: the schedule is never longer
    int fixed;                      // the schedule's total is known (estimated or from a checkpoint)
    int from_ckpt;                  // kept from the resumed checkpoint: never re-estimated
    long first_step;                // timing starts after this step (-1: no step yet)
    double first_time, last_time;
    double recent;                  // moving average of the last ~20 step times
    int adjusts;                    // corrections after the first estimate
} budget_t;

// Set up from c->max_minutes; on a fresh (or unfixed) schedule sets st->total_steps to the cap.
void budget_init(budget_t *b, const trainer_cfg_t *c, double t_start, int resumed, ckpt_state_t *st);
// After each step (st->step already counted): fix or correct st->total_steps from the step time.
void budget_after_step(budget_t *b, ckpt_state_t *st, double now);
// The schedule's length for progress lines: st->total_steps, or 0 while the warm-up measures.
long budget_total(const budget_t *b, const ckpt_state_t *st);
// 1 once the deadline has passed.
int budget_expired(const budget_t *b, double now);

// ---- reports ------------------------------------------------------------------------------
typedef struct {
    double t_start, t_last;         // wall clock of the run start and the last report
    long step_last;                 // step at the last report
    double wait_s, wait_last;       // seconds spent waiting for batches: total, at last report
    long patches, patches_last;
    double loss_sum;
    long loss_n;
    long bad_batches;
    long val_sent, val_skipped;
    long last_val_step;             // step of the newest validation metrics received, -1
    double last_mean_dice;
} report_t;

// ---- the metrics lines on disk until acknowledged (trainer_journal.c) ----------------------
#define JOURNAL_NAME "metrics.pending"
typedef struct {
    char dir[PATH_MAX - 64];        // the spool
    char path[PATH_MAX];            // SPOOL/metrics.pending
    FILE *f;                        // open for appending
    long lines;                     // lines in the file now
    int warned;                     // a write failure was reported
    int torn;                       // the last append failed: a fragment may end the file
} journal_t;

// Open SPOOL/metrics.pending; the lines an earlier trainer left there of steps <= upto (the
// resumed step; 0 for a fresh run) go to out again under their ids, and the file keeps just
// them. 0, or -1 with err (the spool cannot be read or written).
int journal_open(journal_t *j, const char *spool, outbox_t *out, long upto, char *err);
// Post x (source "trainer") to out under a fresh id, appended to the journal first.
void journal_post(journal_t *j, outbox_t *out, const wire_metrics_t *x);
// Nothing waits for an ack any more: empty the file.
void journal_settle(journal_t *j, const outbox_t *out);
// Make the appended lines durable (with each checkpoint).
void journal_sync(journal_t *j);
void journal_close(journal_t *j);

// Every --log-every steps: progress line on stdout, metrics message to the exporter.
// total: the schedule's length now (the checkpoint's, or the budget's estimate); <= 0 prints "?".
// The message goes through the journal and out (acknowledged, sent again until it is, kept on
// disk until then; out NULL: no exporter).
void report_interval(report_t *r, journal_t *j, outbox_t *out, long step, long total, float lr, size_t gpu_peak);
// An eval job: safetensors bytes of params + the step on the evaljobs socket. final: the
// pipeline's last one (kind "final"); else kind "weights", dropped when the evaluator is busy.
// Returns 0 sent, WIRE_AGAIN skipped (busy/absent), -1 with err.
int report_eval_job(const trainer_cfg_t *c, const model_t *m, const char *spool, void *jobs_sock,
                    const float *params, long step, int final, char *err);
// One message from the metrics socket (the evaluator's validation results): log it, unless it
// names another run than run_id (NULL: no check).
void report_on_validation(report_t *r, const wire_msg_t *msg, const char *run_id);

#endif
