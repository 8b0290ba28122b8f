/*
exporter.h -- srm-exporter: the run directory's only writer (issue 6, system.md "Checkpoints").
One ROUTER socket (DEALER clients: trainer, evaluator; no empty delimiter frame) receives
  checkpoint            -> RUN/checkpoints/step-NNNNNNNN.{ckpt,safetensors} + .sha256 sidecars
                           ("<hex>  <name>\n", as sha256sum writes), latest/best symlinks, the
                           last K kept; THEN checkpoint_ack {step, sha256, ok, error}
  metrics               -> one JSON object per line appended to RUN/metrics.jsonl, best chosen
                           from the evaluator's mean foreground Dice, RUN/curves.png refreshed;
                           with an `id`: THEN "ack" {of, id, ok}, and a copy of a filed id is
                           acked without a second line (the ids survive a restart in the lines)
  volume kind=prediction-> RUN/predictions/<case_id>.nii.gz; reply "ack" {of, case_id, path, ok}
                           (+ id; a filed id is acked, not written again)
  request latest[_checkpoint] / checkpoint (by step) -> checkpoint (re-verified) or error
  request acks {id}     -> "ack" {of: "request", id, ok}: the senders' outboxes ask whether we ack
`latest` (the most recently acknowledged checkpoint) and `best` are relative symlinks
RUN/checkpoints/{latest,best}.{ckpt,safetensors} -> step-NNNNNNNN.*, replaced atomically (made
under a temporary name, then renamed); a trainer told to read from disk opens latest.ckpt.
*/
#ifndef SRM_EXPORTER_H
#define SRM_EXPORTER_H
#include <stdint.h>

typedef struct {
    const char *run_dir;
    const char *bind;               // ROUTER endpoint (default ipc://RUN/sock/exporter)
    int keep;                       // K most recent step checkpoints kept (>= 1; default 3)
    uint64_t every;                 // also keep steps that are multiples of this (0: off)
    int allow_remote;               // bind to a non-loopback address
    const char *curve_secret;       // CURVE server key file (tcp only), with...
    const char *authorized;         // ...the authorised client keys file
    double plot_interval_s;         // curves.png refreshed at most this often (default 2)
    const char *run_id;             // this run's id, or NULL: metrics / predictions of another refused
} exporter_cfg_t;

exporter_cfg_t exporter_cfg_default(void);

// Parse argv into cfg (flags: --run-dir --bind --keep --every --allow-remote --curve-server
// --authorized --plot-interval --run-id). 0, 1 for --help (usage printed), or -1 with err.
int exporter_parse_args(exporter_cfg_t *cfg, int argc, char **argv, char *err);
void exporter_usage(void);

// Serve until SIGINT/SIGTERM (the message in hand is finished first). 0 on a clean stop,
// -2 with err when a CURVE key file is missing or bad, -1 with err when the run directory or
// the socket cannot be set up.
int exporter_run(const exporter_cfg_t *cfg, char *err);

#endif
