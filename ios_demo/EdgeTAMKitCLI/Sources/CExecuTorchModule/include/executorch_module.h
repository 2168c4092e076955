// A C interface over ExecuTorch's C++ `Module` (executorch/extension/module/module.h), so Swift calls it without
// C++ interoperability: load one program's `forward`, read its declared tensors, run it on caller-owned buffers.
#ifndef EDGETAM_EXECUTORCH_MODULE_H
#define EDGETAM_EXECUTORCH_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Tensor element types a stage contract uses, numbered as ExecuTorch's ScalarType.
enum {
    ETM_INT32 = 3,
    ETM_INT64 = 4,
    ETM_FLOAT16 = 5,
    ETM_FLOAT32 = 6,
};

#define ETM_MAX_RANK 8

/// One tensor: `data` points at `count` contiguous elements of `dtype`, of the given shape.
typedef struct {
    int32_t dtype;
    int32_t rank;
    int64_t shape[ETM_MAX_RANK];
    const void *data;
} etm_tensor;

typedef struct etm_module etm_module;

/// Load `path` (memory-mapped) and its `forward` method; NULL with the reason in `error` on failure.
etm_module *etm_module_load(const char *path, char *error, size_t error_size);
void etm_module_free(etm_module *module);

size_t etm_module_input_count(const etm_module *module);
size_t etm_module_output_count(const etm_module *module);
/// The declared dtype and shape of input / output `index` (`data` is NULL); 0 on success.
int etm_module_input_info(const etm_module *module, size_t index, etm_tensor *info);
int etm_module_output_info(const etm_module *module, size_t index, etm_tensor *info);

/// Run `forward` on `inputs` (read only during the call). On success (0) the outputs stay readable through
/// `etm_module_output` until the next run or free; otherwise `error` says why.
int etm_module_run(etm_module *module, const etm_tensor *inputs, size_t count, char *error, size_t error_size);
/// Output `index` of the last run: its dtype, shape and data (owned by the module).
int etm_module_output(const etm_module *module, size_t index, etm_tensor *output);

/// Threads of ExecuTorch's process-wide threadpool (XNNPACK's kernels run on it); resize it when `threads` > 0 and no
/// program is loaded (a delegate keeps the pool it was set up with).
size_t etm_threadpool_size(uint32_t threads);

/// The file ExecuTorch's runtime library was loaded from (the executorch package's lib/ folder), or "".
const char *etm_runtime_library(void);

#ifdef __cplusplus
}
#endif

#endif
