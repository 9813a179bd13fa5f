// mixsieve._core_cuda: the soft_cap kernels (see bind.hpp).
#include "bind.hpp"

namespace mixsieve {
namespace cuda_bind {

void bind_soft_cap(pybind11::module_& m) { (void)m; }

}  // namespace cuda_bind
}  // namespace mixsieve
