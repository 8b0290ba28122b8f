/*
both_precisions.h -- declares one set of prototypes in both precisions. Define PRECISION_DECL as
the declarations file, then include this: it includes that file with real = float and
OP(x) = x##_cpu, again with real = double and OP(x) = x##_cpu_f64 (the Makefile builds the
definitions both ways: real.h), and undefines PRECISION_DECL. No include guard: ops.h,
mamba_layer.h and model.h each use it once.
*/
#define real float
#define OP(name) name##_cpu
#include PRECISION_DECL
#undef real
#undef OP
#define real double
#define OP(name) name##_cpu_f64
#include PRECISION_DECL
#undef real
#undef OP
#undef PRECISION_DECL
