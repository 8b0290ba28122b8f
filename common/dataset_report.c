/*
dataset_report.c -- dataset_print_report: what srm-inspect --dataset DIR prints.

One JSON object: the layout, channels, labels, every case (split, files, dims, spacing, label
values present, problems) and the list of all problems seen, so a user learns about a missing
file or a mismatched label before a training run skips the case. Every case is loaded with
dataset_load_case (all checks there) and its foreground computed with the default settings.
*/
#include "dataset.h"
#include "preprocess.h"
#include "check.h"
#include "labels.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *layout_name(dataset_layout_t l)
{
    return l == DATASET_MSD ? "msd" : l == DATASET_NNUNET ? "nnunet" : "plain";
}

static void problem(json_t *all, json_t *mine, const char *msg)
{
    json_array_append_new(all, json_string(msg));
    if (mine) json_array_append_new(mine, json_string(msg));
}

static json_t *int3(const int v[3]) { return json_pack("[iii]", v[0], v[1], v[2]); }

// Load and check case i; fill its JSON entry and problems.
static void report_case(const dataset_t *ds, int i, json_t *jc, json_t *all)
{
    const dataset_case_t *dc = &ds->cases[i];
    json_t *mine = json_array(), *files = json_array();
    char err[ERR_LEN];
    int missing = 0;
    for (int k = 0; k < dc->n_images; k++) {
        json_array_append_new(files, json_string(dc->images[k] ? dc->images[k] : ""));
        if (!dc->images[k] || access(dc->images[k], R_OK) != 0) {
            snprintf(err, sizeof err, "%s: missing or unreadable image file", dc->images[k] ? dc->images[k] : dc->id);
            problem(all, mine, err);
            missing = 1;
        }
    }
    json_object_set_new(jc, "images", files);
    json_object_set_new(jc, "label", dc->label ? json_string(dc->label) : json_null());
    if (dc->label && access(dc->label, R_OK) != 0) {
        snprintf(err, sizeof err, "%s: missing or unreadable label file", dc->label);
        problem(all, mine, err);
        missing = 1;
    }
    if (!missing) {
        case_t c;
        if (dataset_load_case(ds, i, &c, err) < 0) {
            problem(all, mine, err);
        } else {
            json_object_set_new(jc, "dims", int3(c.image.dim));
            json_object_set_new(jc, "spacing", json_pack("[fff]", c.image.spacing[0], c.image.spacing[1], c.image.spacing[2]));
            preprocess_cfg_t cfg;
            preprocess_cfg_default(&cfg);
            uint8_t *mask = xmalloc(volume_voxels(&c.image));
            size_t fg = preprocess_foreground_mask(mask, &c.image, c.modality, &cfg);
            free(mask);
            json_object_set_new(jc, "foreground_fraction", json_real((double)fg / (double)volume_voxels(&c.image)));
            if (fg == 0) {
                snprintf(err, sizeof err, "%s: empty foreground (every voxel is background)", dc->images[0]);
                problem(all, mine, err);
            }
            if (c.label) {
                size_t count[256] = {0};
                for (size_t v = 0; v < volume_voxels(&c.image); v++) count[c.label[v]]++;
                json_t *lv = json_object();
                for (int v = 0; v < 256; v++) {        // ignored voxels under the file's own value
                    char key[8];
                    snprintf(key, sizeof key, "%d", v == LABEL_IGNORE ? ds->ignore_label : v);
                    if (count[v]) json_object_set_new(lv, key, json_integer((json_int_t)count[v]));
                }
                json_object_set_new(jc, "label_voxels", lv);
            }
            case_free(&c);
        }
    }
    json_object_set_new(jc, "problems", mine);
}

int dataset_print_report(const char *dir, FILE *out, char *err)
{
    dataset_t ds;
    if (dataset_open(dir, &ds, err) < 0) return -1;
    json_t *root = json_object(), *all = json_array(), *cases = json_array();
    json_object_set_new(root, "dataset", json_string(ds.dir));
    json_object_set_new(root, "layout", json_string(layout_name(ds.layout)));
    json_t *ch = json_array();
    for (int k = 0; k < ds.n_channels; k++)
        json_array_append_new(ch, json_pack("{s:s, s:s}", "name", ds.channel_names[k], "modality",
                                            modality_name(ds.modality[k])));
    json_object_set_new(root, "channels", ch);
    json_t *labels = json_object();
    for (int l = 0; l < ds.n_labels; l++) {
        json_t *vals = json_array();
        for (int j = 0; j < ds.labels[l].n_values; j++) json_array_append_new(vals, json_integer(ds.labels[l].values[j]));
        json_object_set_new(labels, ds.labels[l].name, ds.labels[l].n_values == 1 ? json_integer(ds.labels[l].values[0]) : vals);
        if (ds.labels[l].n_values == 1) json_decref(vals);
    }
    json_object_set_new(root, "labels", labels);
    json_object_set_new(root, "num_classes", json_integer(ds.num_classes));
    json_object_set_new(root, "ignore_label", ds.ignore_label >= 0 ? json_integer(ds.ignore_label) : json_null());
    json_object_set_new(root, "folds", json_integer(ds.n_folds));
    for (int p = 0; p < ds.n_problems; p++) problem(all, NULL, ds.problems[p]);
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < ds.n_cases; i++) {
        json_t *jc = json_pack("{s:s, s:s}", "id", ds.cases[i].id, "split", ds.cases[i].split);
        report_case(&ds, i, jc, all);
        json_array_append_new(cases, jc);
        counts[strcmp(ds.cases[i].split, "train") == 0 ? 0 : strcmp(ds.cases[i].split, "validation") == 0 ? 1 : 2]++;
    }
    json_object_set_new(root, "num_cases", json_integer(ds.n_cases));
    json_object_set_new(root, "splits", json_pack("{s:i, s:i, s:i}", "train", counts[0], "validation", counts[1], "test", counts[2]));
    json_object_set_new(root, "cases", cases);
    json_object_set_new(root, "num_problems", json_integer((json_int_t)json_array_size(all)));
    json_object_set_new(root, "problems", all);
    int rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (rc == 0 && fputc('\n', out) == EOF) rc = -1;
    if (rc == 0 && fflush(out) != 0) rc = -1;
    if (rc < 0) set_err(err, "%s: could not write the report", ds.dir);
    json_decref(root);
    dataset_free(&ds);
    return rc < 0 ? -1 : 0;
}
