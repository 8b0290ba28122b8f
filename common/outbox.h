/*
outbox.h -- messages a stage must not lose on their way to the exporter (the trainer's metrics
lines; the evaluator's metrics and prediction volumes). Each posted message gets an `id` field
and is kept until the exporter's `ack` carrying that id arrives. It is sent again only when it
was evidently lost: a message first sent after it was acknowledged (the exporter handles one
connection's messages in order), or the exporter acknowledged nothing at all for resend_s (it
died or froze with the message in flight) -- never merely because a busy exporter is slow. While
the exporter is away the DEALER's ZMQ_IMMEDIATE refuses sends and the messages wait here, in
order. The exporter files each id once (exporter_serve.c), so a copy is harmless. Memory is
bounded: beyond OUTBOX_MAX_ENTRIES messages or max_bytes of payload the oldest is dropped with a
warning naming it, and so is one sent OUTBOX_MAX_SENDS times. An ack with ok=false drops the
message when the exporter refuses it (retry=false) and keeps it for a later send when it could not
file it now (retry=true: a full disk). The outbox asks the exporter (`request` "acks") whether it
acknowledges by id -- at the start, and again before copies after a silence, in case it was
replaced; an older build answers with an `error` (or acks a prediction without id), and from
then on messages are sent once, as before. docs/protocol.md, `ack`.
*/
#ifndef SRM_OUTBOX_H
#define SRM_OUTBOX_H
#include "wire.h"
#include "wire_msgs.h"
#include <stddef.h>

#define OUTBOX_MAX_ENTRIES 4096
#define OUTBOX_MAX_SENDS 20         // a message lost this often (or that the exporter cannot take) goes

typedef struct outbox outbox_t;

// who: the sender's stage name, the ids' prefix ("trainer", "evaluator"); sock: its DEALER
// connected to the exporter, which it keeps (and which the caller reads the replies from).
outbox_t *outbox_new(const char *who, void *sock, size_t max_bytes, double resend_s);
void outbox_free(outbox_t **b);
// Take *o (left empty), give it a fresh `id` and send it when the socket takes it. what: for the
// log ("metrics step 40"). key: when not NULL, an unacknowledged older message with the same key
// is dropped first (a newer prediction of a case replaces one still waiting).
void outbox_post(outbox_t *b, wire_out_t *o, const char *what, const char *key);
// The same with the caller's id (1..63 of [A-Za-z0-9_.:-]) instead of a fresh one: an id that
// names the content, so that the exporter files it once whoever sends it (two evaluators that
// both validated the same weights). NULL: a fresh id.
void outbox_post_id(outbox_t *b, wire_out_t *o, const char *what, const char *key, const char *id);
// A fresh id, as outbox_post gives, for a caller that must know it before posting (to keep the
// message on disk under it: trainer_journal.c).
void outbox_fresh_id(outbox_t *b, char id[64]);
// Ask the exporter whether it acknowledges (until it answers), and send what is due: never sent
// yet, or evidently lost (above). Never blocks.
void outbox_tick(outbox_t *b);
// m arrived on the exporter socket: 1 when it is the outbox's (an `ack`, or the `error` an older
// exporter answers the probe with), else 0 (the caller handles m).
int outbox_on_reply(outbox_t *b, const wire_msg_t *m);
// Messages not acknowledged yet.
int outbox_pending(const outbox_t *b);
// Seconds the exporter has made no progress on what waits here: since the later of the last ack
// and the posting of the oldest message waiting (0 when nothing waits).
double outbox_stalled_s(const outbox_t *b);
// Messages sent to an older exporter, which files them without acknowledging.
long outbox_unconfirmed(const outbox_t *b);
// Counters for the stage's closing line.
long outbox_acked(const outbox_t *b);
// Sends made so far, and whether the exporter has since acknowledged a message first sent after
// `sends` of them: then whatever went on the same connection before that message was received
// too, and anything of it left unanswered (a checkpoint) was lost, e.g. with a restarted exporter.
uint64_t outbox_sends(const outbox_t *b);
int outbox_acked_since(const outbox_t *b, uint64_t sends);
long outbox_dropped(const outbox_t *b);

#endif
