/*
wire_json.c -- helpers of the typed messages that lean on libraries: JSON text <-> msgpack
(jansson; the checkpoint config travels as a msgpack map so any client reads it natively) and
SHA-256 (OpenSSL EVP). Both directions bound nesting, so hostile input cannot recurse deeply.
*/
#include "wire_msgs.h"
#include "check.h"
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 6

void wire_sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(data, n, md, &len, EVP_sha256(), NULL) || len != 32) DIE("EVP_Digest(sha256) failed");
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int pack_value(msgpack_packer *pk, json_t *v, int depth, char *err)
{
    if (depth > JSON_MAX_DEPTH) return set_err(err, "JSON nested deeper than %d", JSON_MAX_DEPTH);
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        json_t *val;
        json_object_foreach(v, k, val) {
            msgpack_pack_str_with_body(pk, k, strlen(k));
            if (pack_value(pk, val, depth + 1, err)) return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
            if (pack_value(pk, val, depth + 1, err)) return -1;
        return 0;
    }
    case JSON_STRING: msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v)); return 0;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(v)); return 0;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); return 0;
    case JSON_TRUE: msgpack_pack_true(pk); return 0;
    case JSON_FALSE: msgpack_pack_false(pk); return 0;
    case JSON_NULL: msgpack_pack_nil(pk); return 0;
    }
    return set_err(err, "unknown JSON type");
}

int wire_pack_json(msgpack_packer *pk, const char *json, char *err)
{
    json_error_t je;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!root) return set_err(err, "config JSON: %s (line %d)", je.text, je.line);
    int rc = json_is_object(root) ? pack_value(pk, root, 1, err) : set_err(err, "config JSON is not an object");
    json_decref(root);
    // A failure after packing began leaves a partial value in the packer; callers discard the message.
    return rc;
}

static json_t *to_json(const msgpack_object *o, int depth, char *err)
{
    if (depth > JSON_MAX_DEPTH) return set_err(err, "nested deeper than %d", JSON_MAX_DEPTH), NULL;
    json_t *r = NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX) return set_err(err, "integer too large for JSON"), NULL;
        r = json_integer((json_int_t)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: r = json_integer(o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64:
        r = json_real(o->via.f64);                  // NULL for NaN/Inf
        if (!r) return set_err(err, "non-finite number"), NULL;
        return r;
    case MSGPACK_OBJECT_STR:
        // NUL bytes would not survive JSON text (jansson refuses "\u0000" when loading).
        // msgpack-c gives an empty string a NULL ptr (no memchr on it; jansson wants "")
        if (!o->via.str.size) return json_string("");
        if (memchr(o->via.str.ptr, 0, o->via.str.size)) return set_err(err, "string contains a NUL byte"), NULL;
        r = json_stringn(o->via.str.ptr, o->via.str.size);      // NULL for invalid UTF-8
        if (!r) return set_err(err, "string is not valid UTF-8"), NULL;
        return r;
    case MSGPACK_OBJECT_ARRAY:
        r = json_array();
        for (uint32_t i = 0; r && i < o->via.array.size; i++) {
            json_t *e = to_json(&o->via.array.ptr[i], depth + 1, err);
            if (!e) { json_decref(r); return NULL; }
            if (json_array_append_new(r, e)) { json_decref(r); return set_err(err, "out of memory"), NULL; }
        }
        break;
    case MSGPACK_OBJECT_MAP:
        r = json_object();
        for (uint32_t i = 0; r && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            char key[WIRE_MAX_STR];
            if (wire_obj_str(&kv->key, key, sizeof key)) { json_decref(r); return set_err(err, "map key is not a string"), NULL; }
            if (json_object_get(r, key)) { json_decref(r); return set_err(err, "duplicate key '%.40s'", key), NULL; }
            json_t *e = to_json(&kv->val, depth + 1, err);
            if (!e) { json_decref(r); return NULL; }
            if (json_object_set_new(r, key, e)) { json_decref(r); return set_err(err, "key '%.40s' is not valid UTF-8", key), NULL; }
        }
        break;
    default:
        return set_err(err, "bin/ext values have no JSON form"), NULL;
    }
    if (!r) set_err(err, "out of memory");
    return r;
}

char *wire_obj_to_json(const msgpack_object *o, char *err)
{
    json_t *j = to_json(o, 1, err);
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s) return set_err(err, "json_dumps failed"), NULL;
    // json_dumps allocates with jansson's allocator (malloc by default); hand back our own copy
    // so callers free() it without knowing that.
    char *out = xstrdup(s);
    free(s);
    return out;
}
