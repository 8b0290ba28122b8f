/*
loader_prep.c -- preprocess_record_t <-> the JSON text of a volume's `prep` array. Keys are the
record's field names; affines are 4x4 nested lists, numbers printed with 17 significant
digits so a round trip is exact. Reading checks every key, type, length and range.
*/
#include "loader.h"
#include "check.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static json_t *ivec(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *dvec(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *mat(const double m[4][4])
{
    json_t *a = json_array();
    for (int i = 0; i < 4; i++) json_array_append_new(a, dvec(m[i], 4));
    return a;
}

char *prep_record_to_json(const preprocess_record_t *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "src_dim", ivec(r->src_dim, 3));
    json_object_set_new(o, "src_affine", mat(r->src_affine));
    json_object_set_new(o, "reoriented", json_integer(r->reoriented));
    json_object_set_new(o, "src_ornt_axis", ivec(r->src_ornt.axis, 3));
    json_object_set_new(o, "src_ornt_flip", ivec(r->src_ornt.flip, 3));
    json_object_set_new(o, "ras_dim", ivec(r->ras_dim, 3));
    json_object_set_new(o, "ras_affine", mat(r->ras_affine));
    json_object_set_new(o, "crop_lo", ivec(r->crop_lo, 3));
    json_object_set_new(o, "crop_dim", ivec(r->crop_dim, 3));
    json_object_set_new(o, "out_dim", ivec(r->out_dim, 3));
    json_object_set_new(o, "out_affine", mat(r->out_affine));
    json_object_set_new(o, "out_spacing", dvec(r->out_spacing, 3));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (!s) DIE("json_dumps: out of memory");
    return s;
}

static int get_ivec(json_t *o, const char *key, int *v, int n, int lo, int hi, char *err)
{
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || (int)json_array_size(a) != n) return set_err(err, "prep: '%s' is not a list of %d", key, n);
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
            return set_err(err, "prep: '%s'[%d] is not an integer in [%d, %d]", key, i, lo, hi);
        v[i] = (int)json_integer_value(x);
    }
    return 0;
}

static int get_dvec(json_t *a, const char *key, double *v, int n, char *err)
{
    if (!json_is_array(a) || (int)json_array_size(a) != n) return set_err(err, "prep: '%s' is not a list of %d", key, n);
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (!json_is_number(x) || !isfinite(json_number_value(x))) return set_err(err, "prep: '%s' holds a non-number", key);
        v[i] = json_number_value(x);
    }
    return 0;
}

static int get_mat(json_t *o, const char *key, double m[4][4], char *err)
{
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) != 4) return set_err(err, "prep: '%s' is not 4x4", key);
    for (int i = 0; i < 4; i++)
        if (get_dvec(json_array_get(a, (size_t)i), key, m[i], 4, err)) return -1;
    return 0;
}

int prep_record_from_json(const char *text, size_t len, preprocess_record_t *r, char *err)
{
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return set_err(err, "prep: bad JSON at %d: %s", je.position, je.text);
    int rc = -1;
    if (!json_is_object(o)) { set_err(err, "prep: not an object"); goto done; }
    json_t *jv = json_object_get(o, "version");
    if (!json_is_integer(jv) || json_integer_value(jv) != 1) { set_err(err, "prep: version is not 1"); goto done; }
    json_t *jr = json_object_get(o, "reoriented");
    if (!json_is_integer(jr)) { set_err(err, "prep: 'reoriented' missing"); goto done; }
    r->reoriented = json_integer_value(jr) != 0;
    double sp[3];
    if (get_ivec(o, "src_dim", r->src_dim, 3, 1, VOLUME_MAX_DIM, err) || get_mat(o, "src_affine", r->src_affine, err) ||
        get_ivec(o, "src_ornt_axis", r->src_ornt.axis, 3, 0, 2, err) ||
        get_ivec(o, "src_ornt_flip", r->src_ornt.flip, 3, -1, 1, err) ||
        get_ivec(o, "ras_dim", r->ras_dim, 3, 1, VOLUME_MAX_DIM, err) || get_mat(o, "ras_affine", r->ras_affine, err) ||
        get_ivec(o, "crop_lo", r->crop_lo, 3, 0, VOLUME_MAX_DIM, err) ||
        get_ivec(o, "crop_dim", r->crop_dim, 3, 1, VOLUME_MAX_DIM, err) ||
        get_ivec(o, "out_dim", r->out_dim, 3, 1, VOLUME_MAX_DIM, err) || get_mat(o, "out_affine", r->out_affine, err) ||
        get_dvec(json_object_get(o, "out_spacing"), "out_spacing", sp, 3, err))
        goto done;
    for (int d = 0; d < 3; d++) {
        if (!(sp[d] > 0)) { set_err(err, "prep: out_spacing[%d] = %g", d, sp[d]); goto done; }
        if (r->crop_lo[d] + r->crop_dim[d] > r->ras_dim[d]) { set_err(err, "prep: crop box outside the RAS grid"); goto done; }
        r->out_spacing[d] = sp[d];
    }
    rc = 0;
done:
    json_decref(o);
    return rc;
}
