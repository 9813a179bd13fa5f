// mixsieve._core_cuda: the sampling kernels (see bind.hpp).
#include "bind.hpp"

namespace mixsieve {
namespace cuda_bind {

void bind_sampling(pybind11::module_& m) { (void)m; }

}  // namespace cuda_bind
}  // namespace mixsieve
