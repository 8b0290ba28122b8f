/*
evaluator_internal.h -- service-mode pieces shared by evaluator_job.c (decoding jobs and loader
replies) and evaluator_service.c (the loop). Not for other stages.
*/
#ifndef SRM_EVALUATOR_INTERNAL_H
#define SRM_EVALUATOR_INTERNAL_H
#include "evaluator.h"

#define EVAL_MAX_CASES 4096
#define EVAL_OUTBOX_BYTES ((size_t)1 << 30)     // unacknowledged predictions kept at most (then the oldest goes)
#define EVAL_OUTBOX_AHEAD 8                     // a new one waits (60 s at most) while more are unacknowledged

// An eval job; blob points into the received message.
typedef struct {
    uint64_t step;
    char kind[WIRE_NAME_LEN];       // "weights", "final" or "periodic"
    int final;                      // last job of the run: predictions follow
    const uint8_t *blob;            // safetensors or native checkpoint bytes
    size_t blob_len;
    int has_patch, patch[3];        // config.patch: the training patch = the window
    int has_regions;
    char regions[256];              // config.regions (eval_regions_parse syntax)
    char run[WIRE_ID_LEN];          // the trainer's run id ("" when not given): echoed as "run" in
                                    // the job's metrics and predictions
} eval_job_t;

// A validation case from the loader, converted to float.
typedef struct {
    char id[WIRE_ID_LEN];
    int C;
    float *image;                   // (C, rec.out_dim)
    uint8_t *labels;                // (rec.out_dim) or NULL
    preprocess_record_t rec;
} eval_case_t;

int eval_job_decode(const wire_msg_t *m, eval_job_t *j, char *err);
// -1 with err ("loader: <code>: <message>") when m is an `error` reply, else 0.
int eval_reply_error(const wire_msg_t *m, char *err);
// `case_list` -> *ids (malloc'd rows), *n. 0 or -1 + err.
int eval_case_list_decode(const wire_msg_t *m, char (**ids)[WIRE_ID_LEN], int *n, char *err);
// `volume` (+ prep) -> c (free with eval_case_free). 0 or -1 + err.
int eval_case_decode(const wire_msg_t *m, eval_case_t *c, char *err);
void eval_case_free(eval_case_t *c);

#endif
