/*
cli.h -- command-line value parsing shared by the stages' option parsers (loader_cfg.c,
evaluator_cfg.c, trainer_args.c, augment_cfg.c): integers and numbers with their allowed range,
comma lists, 3D sizes, and the preprocessing flags (--spacing, --norm) the loader and the
evaluator both take. Each returns 0, or -1 with a message naming the flag and the bad value.
*/
#ifndef SRM_CLI_H
#define SRM_CLI_H

#include "preprocess.h"

int cli_long(const char *flag, const char *s, long lo, long hi, long *out, char *err);
int cli_int(const char *flag, const char *s, int lo, int hi, int *out, char *err);
int cli_double(const char *flag, const char *s, double lo, double hi, double *out, char *err);
// exactly n comma-separated finite numbers
int cli_doubles(const char *flag, const char *s, double *v, int n, char *err);
// a size like --patch: "D,H,W" or one "N" for all three, each an integer in [lo, hi] and a
// multiple of mult (1: any); out changes only when the whole text is good
int cli_dims3(const char *flag, const char *s, int lo, int hi, int mult, int out[3], char *err);
// --spacing X,Y,Z (each in (0, 100) mm) or "none" (all zero: keep the source spacing)
int cli_spacing(const char *s, double spacing[3], char *err);
// --norm ct:LO,HI | ct-z:MEAN,STD | mr-fg | mr-all: sets prep's CT or MR normalisation and
// *force_modality (MODALITY_CT / MODALITY_MR) for every channel
int cli_norm(const char *s, preprocess_cfg_t *prep, int *force_modality, char *err);

#endif
