# SegResMamba in C and CUDA -- one flat Makefile.
#   make            build every stage into bin/ (installs missing Debian packages first)
#   make CUDA=0     build without nvcc (CPU reference only)
#   make test       all CPU tests (what CI runs)
#   make test-gpu   GPU tests (needs an NVIDIA GPU)
#   make demo       the main job: synthetic dataset -> trained demo model -> Dice per class
# Build products go to $(BUILD) and $(BIN); helpers working in parallel may point them elsewhere.

# ---- switches ----------------------------------------------------------------
NVCC  ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
# 1 when nvcc is found; override with CUDA=0 to build the CPU-only product.
CUDA  ?= $(if $(NVCC),1,0)
BUILD ?= build
BIN   ?= bin
CUDA_HOME ?= /usr/local/cuda
# H100/H200: compute_90a is needed by kernels that use Hopper-only instructions.
GENCODE ?= -gencode arch=compute_90,code=sm_90

# ---- dependencies: install what is missing, once, before anything is parsed further --------
ifeq ($(filter clean help,$(MAKECMDGOALS)),)
ifneq ($(shell scripts/install-deps.sh --check >/dev/null 2>&1 && echo ok),ok)
$(info make: installing missing build dependencies (scripts/install-deps.sh))
DEPS_LOG := $(shell scripts/install-deps.sh >&2; echo $$?)
ifneq ($(DEPS_LOG),0)
$(error scripts/install-deps.sh failed; run it by hand to see why)
endif
endif
endif

# ---- flags -------------------------------------------------------------------
CC      := gcc
INC     := -Icommon -Icommon/ops -Icommon/nn -Igpu -Itests -I/usr/include/nifti
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -fopenmp -MMD -MP $(INC) \
           $(shell pkg-config --cflags libzmq msgpack 2>/dev/null) -DSRM_CUDA=$(CUDA)
# libnifti2 reads NIfTI-1 and -2; never add -lniftiio: it exports the same symbols with other structs.
LDLIBS  := $(shell pkg-config --libs libzmq msgpack 2>/dev/null) -ljansson -lpng -lcrypto \
           -lnifti2 -lznz -lz -lm -lpthread -fopenmp
NVFLAGS := -O3 -std=c++17 -lineinfo $(GENCODE) -Xcompiler -fPIC -MMD -MP $(INC) -DSRM_CUDA=1
GPULIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcublasLt -lcublas -lcudart -lstdc++

# ---- sources -----------------------------------------------------------------
# common/*.c is built once; common/ops/*.c and common/nn/*.c (precision-generic, see ops.h)
# are built twice: f32 (<op>_cpu) and f64 (<op>_cpu_f64).
COMMON_SRC := $(wildcard common/*.c)
REAL_SRC   := $(wildcard common/ops/*.c common/nn/*.c)
LIB_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC)) \
              $(patsubst %.c,$(BUILD)/f32/%.o,$(REAL_SRC)) \
              $(patsubst %.c,$(BUILD)/f64/%.o,$(REAL_SRC))
LIB        := $(BUILD)/libsrm.a

GPU_SRC    := $(wildcard gpu/*.cu)
GPU_OBJ    := $(patsubst %.cu,$(BUILD)/%.o,$(GPU_SRC))
GPULIB     := $(BUILD)/libsrmgpu.a

# stages/<name>.c -> bin/srm-<name>; these also link the GPU backend when CUDA=1
GPU_STAGES := trainer evaluator bench
# GPU_ONLY stages exist only in the CUDA build (srm-bench measures the GPU and nothing else)
GPU_ONLY   := bench
STAGES     := $(patsubst stages/%.c,$(BIN)/srm-%,$(filter-out $(if $(filter 0,$(CUDA)),$(GPU_ONLY:%=stages/%.c)),$(wildcard stages/*.c)))

TEST_SRC   := $(wildcard tests/cpu/test_*.c)
TESTS      := $(patsubst tests/cpu/%.c,$(BUILD)/tests/%,$(TEST_SRC))
GPU_TEST_SRC := $(wildcard tests/gpu/test_*.c)
GPU_TESTS  := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(GPU_TEST_SRC))
TEST_OBJ   := $(BUILD)/tests/test.o

ifeq ($(CUDA),1)
LINK_GPU = $(if $(filter $(GPU_STAGES),$(patsubst srm-%,%,$(notdir $@))),$(GPULIB) $(GPULIBS))
else
LINK_GPU =
endif

.SECONDARY:
.PHONY: all test test-gpu demo bench fuzz soak clean help tools
all: $(STAGES)

# ---- rules -------------------------------------------------------------------
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/f32/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/f64/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -DSRM_REAL_DOUBLE -c $< -o $@
$(BUILD)/gpu/%.o: gpu/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(GPULIB): $(GPU_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The GPU library goes before libsrm.a too: its objects call common/ code (op shapes, checks).
$(BIN)/srm-%: $(BUILD)/stages/%.o $(LIB) $(if $(filter 1,$(CUDA)),$(GPULIB))
	@mkdir -p $(@D)
	$(CC) $(filter %.o,$^) $(filter %.a,$(LINK_GPU)) $(LIB) $(LINK_GPU) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/cpu/%.o $(TEST_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@
$(BUILD)/tests/gpu/%: $(BUILD)/tests/gpu/%.o $(TEST_OBJ) $(LIB) $(GPULIB)
	@mkdir -p $(@D)
	$(CC) $(filter %.o,$^) $(GPULIB) $(LIB) $(GPULIBS) $(LDLIBS) -o $@

# tests/tools/<name>.c -> $(BUILD)/tools/<name>: helper programs the script tests call
TOOLS      := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))
$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(TEST_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@

tools: $(STAGES) $(TESTS) $(TOOLS)

# ---- entry points ------------------------------------------------------------
test: $(STAGES) $(TESTS) $(TOOLS) $(if $(filter 1,$(CUDA)),$(GPU_TESTS))
	@BUILD=$(BUILD) BIN=$(BIN) bash tests/run.sh cpu

test-gpu: $(STAGES) $(GPU_TESTS)
	@BUILD=$(BUILD) BIN=$(BIN) bash tests/run.sh gpu

# demo.sh builds the stages itself: with CUDA only when a GPU answers (nvcc alone is not enough:
# building the GPU library on a CPU-only machine would eat the demo's 10 minutes).
demo:
	@BUILD=$(BUILD) BIN=$(BIN) bash pipelines/demo.sh

# issue 7's table (needs a GPU): srm-bench via scripts/bench.sh; BENCH_ARGS passes options.
# BENCH_DATA: the dataset of the data-wait row (scripts/data_wait.sh); data-local/brats2013-6 if there.
BENCH_DATA ?= $(wildcard data-local/brats2013-6)
bench: $(BIN)/srm-bench $(STAGES)
	@BIN=$(BIN) BENCH_DATA=$(BENCH_DATA) bash scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(BIN)

help:
	@sed -n '2,7p' Makefile

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- fuzzing (wire) ----
# libFuzzer targets: tests/fuzz/fuzz_NAME.c -> $(BUILD)/fuzz/fuzz_NAME, seeds in tests/fuzz/corpus/NAME/.
# The common/ sources a target needs (FUZZ_DEPS_fuzz_NAME) are compiled again with clang and the
# sanitizers into $(BUILD)/fuzz/obj: gcc's objects carry no libFuzzer coverage instrumentation.
# `make test` builds the targets; tests/cpu/test_fuzz_*.sh replay the seeds and fuzz briefly.
# `make fuzz` is the long campaign: FUZZ_RUNS executions per target, new inputs kept in
# $(BUILD)/fuzz/corpus-NAME (the committed seeds stay untouched).
FUZZ_CC     ?= clang
FUZZ_RUNS   ?= 10000000
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -g -O1 -std=gnu11 -Wall -Wextra -MMD -MP $(INC) -DSRM_CUDA=0 \
               $(shell pkg-config --cflags libzmq msgpack 2>/dev/null)
FUZZ_LIBS   := $(shell pkg-config --libs libzmq msgpack 2>/dev/null) -ljansson -lcrypto -lm -lpthread
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_DEPS_fuzz_wire := $(wildcard common/wire*.c) common/stage.c common/stage_curve.c common/check.c

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

# (a function, so that its '%' is not taken for the stem of the pattern rule below)
fuzz_objs = $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(FUZZ_DEPS_$(1)))
.SECONDEXPANSION:
$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/tests/fuzz/fuzz_%.o $$(call fuzz_objs,fuzz_$$*)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer $^ $(FUZZ_LIBS) -o $@

test: $(FUZZ_TARGETS)

fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do n=$${t##*/fuzz_}; mkdir -p $(BUILD)/fuzz/corpus-$$n $(BUILD)/fuzz/artifacts-$$n; \
	  echo "=== $$t: $(FUZZ_RUNS) executions"; \
	  $$t -runs=$(FUZZ_RUNS) -max_len=16384 -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/artifacts-$$n/ \
	      $(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n || exit 1; done

# ---- fuzzing (nifti, dataset) ----
# fuzz_nifti: nifti_read_volume on .nii/.nii.gz bytes; fuzz_dataset: dataset.json (+ splits) over a
# fixed tiny file tree. Seeds in tests/fuzz/corpus/{nifti,dataset} (from tests/corpus and the
# datasets' JSON); CI: tests/cpu/test_fuzz_nifti_replay.sh. The NIfTI targets link libnifti2.
FUZZ_DEPS_fuzz_nifti   := common/nifti_io.c common/check.c
FUZZ_DEPS_fuzz_dataset := common/dataset.c common/dataset_folds.c common/dataset_case.c \
                          common/nifti_io.c common/check.c common/mt19937.c
FUZZ_LIBS += -lnifti2 -lznz -lz

# ---- soak (issue 8) ----
# >= 30 minutes of a tiny CPU run, every stage's resident memory sampled each minute (trainer
# SIGSTOPped for a fifth of it), CSV in $(BUILD)/soak.csv; SOAK_ARGS passes scripts/soak.sh options.
soak: $(STAGES)
	@BIN=$(BIN) bash scripts/soak.sh --out $(BUILD)/soak.csv $(SOAK_ARGS)
