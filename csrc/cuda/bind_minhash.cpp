// mixsieve._core_cuda: the minhash kernels (see bind.hpp).
#include "bind.hpp"

namespace mixsieve {
namespace cuda_bind {

void bind_minhash(pybind11::module_& m) { (void)m; }

}  // namespace cuda_bind
}  // namespace mixsieve
