/*
outbox.h -- messages a stage must not lose on their way to the exporter (the trainer's metrics
lines; the evaluator's metrics and prediction volumes). Each posted message gets an `id` field
and is kept until the exporter's `ack` carrying that id arrives; without one after resend_s it is
sent again (the exporter was killed with it in flight, or was away: the DEALER's ZMQ_IMMEDIATE
refuses sends then, and the message waits here). A message is sent again only when it was
evidently lost -- a message sent after it was acknowledged (the exporter handles its messages
in order), or nothing at all was acknowledged for resend_s -- never merely because a busy
exporter is slow. The exporter files each id once (exporter_serve.c), so a resend is harmless.
Memory is bounded: beyond OUTBOX_MAX_ENTRIES messages or max_bytes of payload the oldest is
dropped with a warning naming it. An ack with ok=false drops the message when the exporter
refuses it (retry=false) and keeps it for a later resend when it could not file it now
(retry=true: a full disk). An exporter that has never acknowledged by id within
OUTBOX_FIRST_ACK resend periods of a message is taken for an older build (which files messages but never
acks them): messages then leave the outbox once sent, as before. docs/protocol.md, `ack`.
*/
#ifndef SRM_OUTBOX_H
#define SRM_OUTBOX_H
#include "wire.h"
#include "wire_msgs.h"
#include <stddef.h>

#define OUTBOX_MAX_ENTRIES 4096
#define OUTBOX_FIRST_ACK 6          // resend periods (60 s by default) for the first ack by id

typedef struct outbox outbox_t;

// who: the sender's stage name, the ids' prefix ("trainer", "evaluator").
outbox_t *outbox_new(const char *who, size_t max_bytes, double resend_s);
void outbox_free(outbox_t **b);
// Take *o (left empty), give it a fresh `id` and send it when the socket takes it. what: for the
// log ("metrics step 40"). key: when not NULL, an unacknowledged older message with the same key
// is dropped first (a newer prediction of a case replaces one still waiting).
void outbox_post(outbox_t *b, void *sock, wire_out_t *o, const char *what, const char *key);
// Send what is due: never sent yet, or unacknowledged for resend_s. Never blocks.
void outbox_tick(outbox_t *b, void *sock);
// m arrived on the exporter socket: 1 when it is an `ack` that carries an `id` (handled here,
// ours or a stale one), else 0 (the caller handles m).
int outbox_on_reply(outbox_t *b, const wire_msg_t *m);
// Messages not acknowledged yet.
int outbox_pending(const outbox_t *b);
// Seconds the exporter has made no progress on what waits here: since the later of the last ack
// and the posting of the oldest message waiting (0 when nothing waits).
double outbox_stalled_s(const outbox_t *b);
// 1 once the exporter has acknowledged a message by id (it will acknowledge the rest).
int outbox_reliable(const outbox_t *b);
// Counters for the stage's closing line.
long outbox_acked(const outbox_t *b);
long outbox_dropped(const outbox_t *b);

#endif
