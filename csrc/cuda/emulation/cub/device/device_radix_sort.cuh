// Host stand-in for cub::DeviceRadixSort::SortPairs (a stable sort on bits [begin_bit, end_bit)),
// for the emulated kernel check (../../cuda_runtime.h).
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

namespace cub {
struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, std::size_t& bytes, const K* keys_in, K* keys_out, const V* vals_in,
                               V* vals_out, int n, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                               cudaStream_t = nullptr) {
    if (temp == nullptr) {
      bytes = 64;
      return cudaSuccess;
    }
    if (bytes < 64) return 1;
    const K mask = end_bit >= static_cast<int>(sizeof(K) * 8) ? ~K(0) : static_cast<K>((K(1) << end_bit) - 1);
    std::vector<int> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return ((keys_in[a] & mask) >> begin_bit) < ((keys_in[b] & mask) >> begin_bit);
    });
    for (int i = 0; i < n; ++i) {
      keys_out[i] = keys_in[order[i]];
      vals_out[i] = vals_in[order[i]];
    }
    return cudaSuccess;
  }
};
}  // namespace cub
