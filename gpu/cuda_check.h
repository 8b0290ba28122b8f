/*
cuda_check.h -- every call into CUDA, cuBLAS(Lt) and cuDNN goes through one of these macros.
An unchecked cuda* / cublas* / cudnn* call is a review blocker (style.md §7.6).

A failed call means the run cannot continue: gpu_fail() prints the library, its reason, the
failing statement, file:line and function, and exit(1)s. KERNEL_CHECK() follows every <<<...>>>
launch; with SRM_GPU_SYNC=1 in the environment it also synchronizes, so an asynchronous fault
is reported at the launch that caused it. Only .cu files include this header.
*/
#ifndef SRM_CUDA_CHECK_H
#define SRM_CUDA_CHECK_H
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cudnn.h>

void gpu_fail(const char *lib, const char *why, const char *stmt,
              const char *file, int line, const char *func) __attribute__((noreturn));

// Read once from SRM_GPU_SYNC when the first context is created (device.cu).
extern int gpu_sync_after_launch;

#define GPU_CHECK_GEN(lib, type, ok, to_str, stmt)                                      \
    do {                                                                                \
        type e_ = (stmt);                                                               \
        if (e_ != (ok)) gpu_fail(lib, to_str(e_), #stmt, __FILE__, __LINE__, __func__); \
    } while (0)

#define CUDA_CHECK(stmt)   GPU_CHECK_GEN("CUDA", cudaError_t, cudaSuccess, cudaGetErrorString, stmt)
#define CUBLAS_CHECK(stmt) \
    GPU_CHECK_GEN("cuBLAS", cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, stmt)
#define CUDNN_CHECK(stmt) \
    GPU_CHECK_GEN("cuDNN", cudnnStatus_t, CUDNN_STATUS_SUCCESS, cudnnGetErrorString, stmt)

// After every <<<...>>>: a bad launch configuration now; faults inside the kernel when asked.
#define KERNEL_CHECK()                                                  \
    do {                                                                \
        CUDA_CHECK(cudaGetLastError());                                 \
        if (gpu_sync_after_launch) CUDA_CHECK(cudaDeviceSynchronize()); \
    } while (0)

#endif
