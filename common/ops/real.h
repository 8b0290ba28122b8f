/*
real.h -- included first by every file in common/ops/ (and common/nn/): selects the precision
this compilation builds. The Makefile compiles each such file twice, the second time with
-DSRM_REAL_DOUBLE. See ops.h.
*/
#ifndef SRM_REAL_H
#define SRM_REAL_H
#include "ops.h"
#ifdef SRM_REAL_DOUBLE
#define real double
#define OP(name) name##_cpu_f64
#else
#define real float
#define OP(name) name##_cpu
#endif
#endif
