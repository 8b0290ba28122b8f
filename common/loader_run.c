/*
loader_run.c -- srm-loader's main work: open the dataset and sockets, then push every training
case as a `volume` message, epoch after epoch, in an order shuffled per epoch from (seed, epoch).
Each case is preprocessed once through the case cache; a case that fails is logged by name,
marked bad and skipped from then on. Memory stays bounded: one case is mapped at a time, and the
PUSH socket's high-water mark makes the loop wait (serving validation requests meanwhile)
instead of queueing when the augmenters are busy.
*/
#include "loader.h"
#include "check.h"
#include "durable_fs.h"
#include "rng.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// o with the CURVE server options set when the loader has a key and ep is tcp, else without.
static stage_sock_opts_t *curve_opts(stage_sock_opts_t *o, const loader_cfg_t *cfg, const char *ep)
{
    int on = cfg->curve_server && !strncmp(ep, "tcp://", 6);
    o->curve_secret = on ? cfg->curve_server : NULL;
    o->curve_server = on;
    return o;
}

// The settings every volume is preprocessed with, and each channel's modality, to cfg->prep_out
// (atomically: the trainer may read it at any time to put it in its checkpoints).
static int write_prep(const loader_cfg_t *cfg, const dataset_t *ds, char *err)
{
    char dir[FS_PATH_MAX];
    const char *name = fs_split_path(cfg->prep_out, dir, sizeof dir);
    char *text = preprocess_settings_json(&cfg->prep, ds->modality, ds->n_channels);
    int rc = fs_write_atomic(dir, name, text, strlen(text), err) || fs_fsync_dir(dir, err);
    if (!rc) log_msg('I', "preprocessing settings written to %s", cfg->prep_out);
    free(text);
    return rc;
}

int loader_open(loader_t *L, const loader_cfg_t *cfg, stage_t *st, char *err)
{
    memset(L, 0, sizeof *L);
    L->cfg = cfg;
    L->st = st;
    if (dataset_open(cfg->dataset, &L->ds, err)) return -2;
    if (cfg->splits && dataset_read_splits_file(&L->ds, cfg->splits, err)) return -2;
    if (cfg->splits) log_msg('I', "folds from %s (%d)", cfg->splits, L->ds.n_folds);
    for (int i = 0; i < L->ds.n_problems; i++) log_msg('W', "%s: %s", cfg->dataset, L->ds.problems[i]);
    if (cfg->force_modality >= 0)                   // --norm names the modality of every channel
        for (int c = 0; c < L->ds.n_channels; c++) L->ds.modality[c] = (modality_t)cfg->force_modality;
    else if (L->ds.layout == DATASET_PLAIN)         // no channel names: said, since CT would want a window
        log_msg('W', "%s has no dataset.json: its channels are normalised as MR (z-score over the foreground); "
                "for CT give --norm ct:LO,HI (MONAI's BTCV window: ct:-175,250) or a dataset.json naming the "
                "channels", cfg->dataset);
    if (cfg->prep_out && write_prep(cfg, &L->ds, err)) return -1;
    L->num_classes = cfg->classes ? cfg->classes : L->ds.num_classes;
    L->bad = xcalloc((size_t)L->ds.n_cases + 1, 1);
    if (dataset_select(&L->ds, cfg->train_sel, &L->train, &L->n_train, err)) return -2;
    if (L->n_train == 0) return set_err(err, "%s: selection '%s' holds no case", cfg->dataset, cfg->train_sel), -2;
    int k, nf;
    const char *source = dataset_fold_source(&L->ds, &nf);
    if (sscanf(cfg->train_sel, "fold%d/", &k) == 1 && dataset_fold_is_random(&L->ds, k))
        log_msg('W', "fold %d is past the %d folds of %s: as nnU-Net does, a seeded random 80:20 split "
                "(RandomState(12345 + %d) over the sorted ids)", k, nf, cfg->splits ? cfg->splits : source, k);
    stage_sock_opts_t o = stage_sock_defaults();
    o.allow_remote = cfg->allow_remote;
    o.hwm = cfg->hwm;
    if (cfg->curve_server) {
        // CURVE is a tcp mechanism: ipc endpoints stay plain (their file permissions guard them).
        int tcp_v = !strncmp(cfg->volumes_ep, "tcp://", 6), tcp_c = cfg->cases_ep && !strncmp(cfg->cases_ep, "tcp://", 6);
        if (!tcp_v && !tcp_c) log_msg('W', "--curve-server given but no endpoint is tcp: nothing to encrypt");
        else {                                      // the key files: no restart makes them appear
            char pub[41], sec[41];
            if (stage_key_read(cfg->curve_server, pub, sec, err) || stage_curve_authorize(st, cfg->authorized, err))
                return -2;
        }
    }
    if (!(L->volumes = stage_socket(st, ZMQ_PUSH, cfg->volumes_ep, STAGE_BIND, curve_opts(&o, cfg, cfg->volumes_ep), err)))
        return -1;
    if (cfg->cases_ep) {
        if (dataset_select(&L->ds, cfg->val_sel, &L->val, &L->n_val, err)) return -2;
        o.hwm = 16;                                 // replies to a few evaluators, never blocks
        if (!(L->cases = stage_socket(st, ZMQ_ROUTER, cfg->cases_ep, STAGE_BIND, curve_opts(&o, cfg, cfg->cases_ep), err)))
            return -1;
    }
    log_msg('I', "%s: %d training cases (%s), %d served on request (%s), cache %s", cfg->dataset,
            L->n_train, cfg->train_sel, L->n_val, cfg->cases_ep ? cfg->val_sel : "off", cfg->cache);
    case_cache_sweep(cfg->cache);
    return 0;
}

void loader_close(loader_t *L)
{
    free(L->train);
    free(L->val);
    free(L->bad);
    dataset_free(&L->ds);
    memset(L, 0, sizeof *L);
}

static wire_dtype_t wire_dtype_of(cache_dtype_t t)
{
    return t == CACHE_DTYPE_I16 ? WIRE_I16 : t == CACHE_DTYPE_F16 ? WIRE_F16 : WIRE_F32;
}

int loader_volume_msg(loader_t *L, int i, int64_t index, int64_t epoch, int with_prep,
                      wire_out_t *o, cached_case_t *cc, char **prep_json, char *err)
{
    wire_out_init(o, "volume");
    *prep_json = NULL;
    int got = case_cache_get(L->cfg->cache, &L->ds, i, &L->cfg->prep, cc, NULL, err);
    if (got) return got;
    size_t n = (size_t)cc->dim[0] * cc->dim[1] * cc->dim[2];
    int64_t badv = cc->label && L->num_classes ? wire_labels_check(cc->label, n, L->num_classes) : -1;
    if (badv >= 0) {
        set_err(err, "%s: label %d at voxel %lld is not below --classes %d", cc->id, cc->label[badv],
                (long long)badv, L->num_classes);
        cached_case_close(cc);
        return -1;
    }
    wire_volume_t v;
    memset(&v, 0, sizeof v);
    snprintf(v.case_id, sizeof v.case_id, "%s", cc->id);
    v.index = index;
    v.epoch = epoch;
    v.C = cc->C;
    v.D = cc->dim[0]; v.H = cc->dim[1]; v.W = cc->dim[2];
    v.image_dtype = wire_dtype_of(cc->image_dtype);
    v.image = cc->image;
    v.labels = cc->label;
    for (int d = 0; d < 3; d++) v.spacing[d] = cc->rec.out_spacing[d];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) v.affine[4 * r + c] = cc->rec.out_affine[r][c];
    v.num_classes = L->num_classes;
    if (epoch >= 0) {                   // a training volume (the augmenters'): the run's geometry
        memcpy(v.train_patch, L->cfg->trainer_patch, sizeof v.train_patch);
        v.train_batch = L->cfg->trainer_batch;
    }
    if (with_prep) {
        *prep_json = prep_record_to_json(&cc->rec);
        v.prep = (const uint8_t *)*prep_json;
        v.prep_len = strlen(*prep_json);
    }
    if (wire_encode_volume(o, &v, err)) {
        cached_case_close(cc);
        free(*prep_json);
        *prep_json = NULL;
        return -1;
    }
    return 0;
}

// Wait until the volumes socket takes the message, answering case requests meanwhile.
// 0 sent, 1 stopping, -1 err.
static int send_volume(loader_t *L, wire_out_t *o, char *err)
{
    for (;;) {
        zmq_pollitem_t it[2] = { { L->volumes, 0, ZMQ_POLLOUT, 0 }, { L->cases, 0, ZMQ_POLLIN, 0 } };
        stage_event_t e = stage_poll(L->st, it, L->cases ? 2 : 1, 1000);
        if (e == STAGE_STOP) return 1;
        if (L->cases && (it[1].revents & ZMQ_POLLIN)) loader_serve_cases(L);
        if (!(it[0].revents & ZMQ_POLLOUT)) continue;
        int rc = wire_send(L->volumes, o, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) continue;
        return rc < 0 ? -1 : 0;
    }
}

static void shuffle(int *x, int n, uint64_t seed, long epoch)
{
    rng_t r = rng_derive(seed, (uint64_t)epoch, 0x5347ull);     // Fisher-Yates
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1), t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

int loader_run(loader_t *L, char *err)
{
    const loader_cfg_t *cfg = L->cfg;
    int *order = xmalloc((size_t)L->n_train * sizeof(int));
    int rc = 0;
    char first_bad[2 * ERR_LEN] = "";       // why the first skipped case was skipped
    for (long e = 0; cfg->epochs == 0 || e < cfg->epochs; e++) {
        memcpy(order, L->train, (size_t)L->n_train * sizeof(int));
        shuffle(order, L->n_train, cfg->seed, e);
        double t0 = now_s();
        int sent = 0, skipped = 0;
        for (int k = 0; k < L->n_train && rc == 0; k++) {
            int i = order[k];
            if (L->bad[i]) { skipped++; continue; }
            wire_out_t o;
            cached_case_t cc;
            char *prep, why[ERR_LEN];
            int vr = loader_volume_msg(L, i, i, e, 0, &o, &cc, &prep, why), ok = vr == 0;
            if (vr == -2) {                 // the cache's disk, not the case: stop (a restart may do)
                wire_out_free(&o);
                rc = set_err(err, "case %s: %s", L->ds.cases[i].id, why);
                break;
            }
            if (ok && !cc.label) {
                snprintf(why, sizeof why, "%s: no label map (not a training case)", cc.id);
                cached_case_close(&cc);
                ok = 0;
            }
            if (!ok) {
                L->bad[i] = 1;
                log_msg('W', "skipping case %s: %s", L->ds.cases[i].id, why);
                if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "case %s: %s", L->ds.cases[i].id, why);
                wire_out_free(&o);
                skipped++;
                continue;
            }
            rc = send_volume(L, &o, err);
            cached_case_close(&cc);
            wire_out_free(&o);
            sent += rc == 0;
        }
        if (rc) break;
        if (sent == 0) {                    // every case is marked bad: a restart would find the same
            rc = -2;
            set_err(err, "%s: no usable case in '%s' (%d skipped; the first, %s)", cfg->dataset, cfg->train_sel,
                    skipped, first_bad);
            break;
        }
        log_msg('I', "epoch %ld: %d volumes sent, %d skipped, %.1f s", e, sent, skipped, now_s() - t0);
        if (stage_stopping(L->st)) { rc = 1; break; }
    }
    free(order);
    return rc < 0 ? rc : 0;
}
