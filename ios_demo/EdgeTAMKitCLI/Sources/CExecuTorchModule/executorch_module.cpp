// ExecuTorch's C++ Module behind the C interface of executorch_module.h. Built against the executorch wheel of
// the active Python environment (ios_demo/scripts/build-kit-cli.sh passes its include and library folders).
#if !__has_include(<executorch/extension/module/module.h>)
#error "ExecuTorch's headers are not on the include path: build with ios_demo/scripts/build-kit-cli.sh"
#endif

#include "executorch_module.h"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

// The wheel ships libexecutorch_threadpool.so but not its header; these are the two functions of
// extension/threadpool/threadpool.h this file calls (non-virtual members, so declaring them is enough).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t thread_count);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::aten::ScalarType;
using executorch::extension::TensorPtr;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

/// Programs loaded and not yet freed: the threadpool is resized only while there are none.
static std::atomic<int> live_modules{0};

struct etm_module {
  std::unique_ptr<Module> module;
  std::vector<etm_tensor> inputs;
  std::vector<etm_tensor> outputs;
  std::vector<EValue> results;
};

namespace {

void say(char* error, size_t size, const std::string& text) {
  if (error != nullptr && size > 0) std::snprintf(error, size, "%s", text.c_str());
}

std::string reason(Error code) {
  return std::string(executorch::runtime::to_string(code)) + " (error " + std::to_string(static_cast<int>(code)) + ")";
}

/// Native code writes ExecuTorch's and cpuinfo's log lines to file descriptor 2 while a program loads; failures
/// are returned as errors instead, so the command line keeps its one-line error contract.
class StderrSilenced {
 public:
  StderrSilenced() {
    std::fflush(stderr);
    saved_ = dup(2);
    int sink = open("/dev/null", O_WRONLY);
    if (sink >= 0) {
      dup2(sink, 2);
      close(sink);
    }
  }
  ~StderrSilenced() {
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
    }
  }

 private:
  int saved_;
};

bool describe(const executorch::runtime::TensorInfo& info, etm_tensor* out) {
  auto sizes = info.sizes();
  if (sizes.size() > ETM_MAX_RANK) return false;
  out->dtype = static_cast<int32_t>(info.scalar_type());
  out->rank = static_cast<int32_t>(sizes.size());
  for (size_t axis = 0; axis < sizes.size(); ++axis) out->shape[axis] = sizes[axis];
  out->data = nullptr;
  return true;
}

}  // namespace

extern "C" {

etm_module* etm_module_load(const char* path, char* error, size_t error_size) {
  auto loaded = std::make_unique<etm_module>();
  {
    StderrSilenced quiet;
    loaded->module = std::make_unique<Module>(path, Module::LoadMode::Mmap);
    Error status = loaded->module->load_forward();
    if (status != Error::Ok) {
      say(error, error_size, "ExecuTorch cannot load its forward method: " + reason(status));
      return nullptr;
    }
  }
  auto meta = loaded->module->method_meta("forward");
  if (!meta.ok()) {
    say(error, error_size, "no metadata for forward: " + reason(meta.error()));
    return nullptr;
  }
  using Declared = executorch::runtime::Result<executorch::runtime::TensorInfo> (executorch::runtime::MethodMeta::*)(
      size_t) const;
  const struct {
    const char* role;
    size_t count;
    Declared read;
    std::vector<etm_tensor>* into;
  } lists[] = {{"input", meta->num_inputs(), &executorch::runtime::MethodMeta::input_tensor_meta, &loaded->inputs},
               {"output", meta->num_outputs(), &executorch::runtime::MethodMeta::output_tensor_meta, &loaded->outputs}};
  for (const auto& list : lists) {
    for (size_t index = 0; index < list.count; ++index) {
      auto info = ((*meta).*list.read)(index);
      etm_tensor tensor{};
      if (!info.ok() || !describe(*info, &tensor)) {
        say(error, error_size, std::string(list.role) + " " + std::to_string(index) + " is not a tensor of rank <= 8");
        return nullptr;
      }
      list.into->push_back(tensor);
    }
  }
  live_modules++;
  return loaded.release();
}

void etm_module_free(etm_module* module) {
  if (module != nullptr) live_modules--;
  delete module;
}

size_t etm_module_input_count(const etm_module* module) { return module->inputs.size(); }

size_t etm_module_output_count(const etm_module* module) { return module->outputs.size(); }

int etm_module_input_info(const etm_module* module, size_t index, etm_tensor* info) {
  if (index >= module->inputs.size()) return 1;
  *info = module->inputs[index];
  return 0;
}

int etm_module_output_info(const etm_module* module, size_t index, etm_tensor* info) {
  if (index >= module->outputs.size()) return 1;
  *info = module->outputs[index];
  return 0;
}

int etm_module_run(etm_module* module, const etm_tensor* inputs, size_t count, char* error, size_t error_size) {
  module->results.clear();
  std::vector<TensorPtr> tensors;
  std::vector<EValue> values;
  tensors.reserve(count);
  values.reserve(count);
  for (size_t index = 0; index < count; ++index) {
    const etm_tensor& input = inputs[index];
    if (input.rank < 0 || input.rank > ETM_MAX_RANK) {
      say(error, error_size, "input " + std::to_string(index) + " has rank " + std::to_string(input.rank));
      return 1;
    }
    std::vector<executorch::aten::SizesType> sizes(input.shape, input.shape + input.rank);
    tensors.push_back(executorch::extension::from_blob(const_cast<void*>(input.data), std::move(sizes),
                                                        static_cast<ScalarType>(input.dtype)));
    values.emplace_back(*tensors.back());
  }
  // Not silenced, unlike loading: file descriptor 2 must stay the terminal's while a run can be interrupted (the
  // Ctrl-C handler reports there), and a kernel logs only when it fails.
  auto result = module->module->forward(values);
  if (!result.ok()) {
    say(error, error_size, "forward failed: " + reason(result.error()));
    return 1;
  }
  for (size_t index = 0; index < result->size(); ++index) {
    if (!(*result)[index].isTensor()) {
      say(error, error_size, "output " + std::to_string(index) + " is not a tensor");
      return 1;
    }
  }
  module->results = std::move(*result);
  return 0;
}

int etm_module_output(const etm_module* module, size_t index, etm_tensor* output) {
  if (index >= module->results.size()) return 1;
  const auto& tensor = module->results[index].toTensor();
  if (tensor.dim() > ETM_MAX_RANK) return 1;
  output->dtype = static_cast<int32_t>(tensor.scalar_type());
  output->rank = static_cast<int32_t>(tensor.dim());
  for (ssize_t axis = 0; axis < tensor.dim(); ++axis) output->shape[axis] = tensor.size(axis);
  output->data = tensor.const_data_ptr();
  return 0;
}

size_t etm_threadpool_size(uint32_t threads) {
  StderrSilenced quiet;  // the first call creates the pool, and cpuinfo logs what it probes
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 0;
  // XNNPACK captures the pool when a program's delegate is set up: resizing under a loaded program frees the pool
  // it holds, so the size only changes while no program is loaded.
  if (threads > 0 && live_modules == 0 && pool->get_thread_count() != threads) pool->_unsafe_reset_threadpool(threads);
  return pool->get_thread_count();
}

const char* etm_runtime_library(void) {
  Dl_info info{};
  void* symbol = reinterpret_cast<void*>(&executorch::extension::threadpool::get_threadpool);
  return dladdr(symbol, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "";
}

}  // extern "C"
