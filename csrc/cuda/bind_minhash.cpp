// mixsieve._core_cuda: the MinHash kernels (minhash.cu). Documents reach the device in the
// Arrow layout (one byte buffer, n + 1 int64 offsets): TextPack reads a list of str/bytes or
// an Arrow string array as views (the CPU binding's reader, ../bindings/texts.hpp) and copies
// a range of documents into one host buffer (pinned, from torch) on several threads without
// the GIL; the caller uploads it in one copy. minhash_signatures takes device pointers and
// torch's stream and only enqueues work. Sizes are checked here, offsets by the caller (the
// Python layer, on the host) and again by the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../bindings/texts.hpp"
#include "bind.hpp"
#include "minhash_cuda.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/unicode.hpp"

namespace py = pybind11;
namespace mh = mixsieve::minhash_cuda;
using Ptr = std::uintptr_t;

namespace mixsieve {
namespace cuda_bind {
namespace {

void check(const char* err, const char* what) {
  if (err != nullptr) throw std::runtime_error(std::string(what) + ": CUDA error: " + err);
}

// The documents of a list of str/bytes or an Arrow string array, read once (with the GIL) and
// copied out in ranges (without it). The views stay valid while this object lives.
class TextPack {
 public:
  explicit TextPack(const py::handle& texts) : batch_(mixsieve_bind::collect_texts(texts)) {
    offsets_.resize(batch_.views.size() + 1);
    offsets_[0] = 0;
    for (std::size_t i = 0; i < batch_.views.size(); ++i) {
      offsets_[i + 1] = offsets_[i] + static_cast<std::int64_t>(batch_.views[i].size());
    }
  }

  std::size_t size() const { return batch_.views.size(); }

  // n + 1 byte offsets of the documents packed one after another.
  py::array_t<std::int64_t> offsets() const {
    py::array_t<std::int64_t> out(static_cast<py::ssize_t>(offsets_.size()));
    std::memcpy(out.mutable_data(), offsets_.data(), offsets_.size() * sizeof(std::int64_t));
    return out;
  }

  // Copies documents [begin, end) one after another to dst (host memory of `capacity` bytes);
  // returns the bytes written.
  std::int64_t pack(std::int64_t begin, std::int64_t end, Ptr dst, std::int64_t capacity, int threads) const {
    const auto n = static_cast<std::int64_t>(size());
    if (begin < 0 || end < begin || end > n) {
      throw py::value_error("documents [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") are outside [0, " + std::to_string(n) + ")");
    }
    if (threads < 0) throw py::value_error("threads must be >= 0 (0: all cores)");
    const std::int64_t bytes = offsets_[end] - offsets_[begin];
    if (bytes > capacity) {
      throw py::value_error("the buffer holds " + std::to_string(capacity) + " bytes, the documents need " +
                            std::to_string(bytes));
    }
    if (bytes > 0 && dst == 0) throw py::value_error("dst must be given");
    char* const out = reinterpret_cast<char*>(dst);
    const std::int64_t base = offsets_[begin];
    py::gil_scoped_release release;
    // grain: documents per task, about 1 MB of text each
    const std::size_t count = static_cast<std::size_t>(end - begin);
    const std::size_t grain = count == 0 ? 1 : std::max<std::size_t>(1, count * (1 << 20) / (bytes + 1));
    parallel_for(count, static_cast<unsigned>(threads), grain, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const auto& v = batch_.views[static_cast<std::size_t>(begin) + i];
        if (!v.empty()) std::memcpy(out + (offsets_[static_cast<std::size_t>(begin) + i] - base), v.data(), v.size());
      }
    });
    return bytes;
  }

 private:
  mixsieve_bind::TextBatch batch_;
  std::vector<std::int64_t> offsets_;
};

}  // namespace

void bind_minhash(py::module_& m) {
  py::class_<TextPack>(m, "TextPack")
      .def(py::init<const py::handle&>(), py::arg("texts"))
      .def("__len__", &TextPack::size)
      .def("offsets", &TextPack::offsets, "n + 1 int64 byte offsets of the documents packed one after another.")
      .def("pack", &TextPack::pack, py::arg("begin"), py::arg("end"), py::arg("dst"), py::arg("capacity"),
           py::arg("threads") = 0,
           "Copy documents [begin, end) one after another to host memory at dst; returns the bytes written.");

  m.def("minhash_unicode_tables", [] {
    const std::vector<unsigned char> blob = UnicodeBlob::build();
    return py::bytes(reinterpret_cast<const char*>(blob.data()), blob.size());
  }, "The Unicode tables the kernels read (UnicodeBlob), to copy to each device once.");

  m.def(
      "minhash_workspace_bytes",
      [](std::int64_t n, std::int64_t text_bytes, int unit) {
        if (n < 0 || n > mh::kMaxDocuments) throw py::value_error("n is out of range: " + std::to_string(n));
        if (text_bytes < 0 || text_bytes > mh::kMaxCallBytes) {
          throw py::value_error("text_bytes is out of range: " + std::to_string(text_bytes));
        }
        if (unit != 0 && unit != 1) throw py::value_error("unit must be 0 (word) or 1 (char)");
        std::size_t bytes = 0;
        check(mh::workspace_bytes(n, text_bytes, unit, &bytes), "minhash_workspace_bytes");
        return bytes;
      },
      py::arg("n"), py::arg("text_bytes"), py::arg("unit"),
      "Bytes of device workspace minhash_signatures needs for n documents of text_bytes bytes.");

  m.def(
      "minhash_signatures",
      [](int width, int num_perm, int ngram, int unit, std::uint64_t seed, Ptr a, Ptr b, Ptr unicode, Ptr data,
         std::int64_t data_bytes, Ptr offsets, std::int64_t n, std::int64_t text_bytes, Ptr out, Ptr digests,
         Ptr workspace, std::size_t workspace_bytes, Ptr cuda_stream) {
        if (width != 32 && width != 64) throw py::value_error("width must be 32 or 64, got " + std::to_string(width));
        if (num_perm < 1 || num_perm > (1 << 16)) throw py::value_error("num_perm must be in [1, 65536]");
        if (ngram < 1 || ngram > (1 << 16)) throw py::value_error("ngram must be in [1, 65536]");
        if (unit != 0 && unit != 1) throw py::value_error("unit must be 0 (word) or 1 (char)");
        if (n < 0 || n > mh::kMaxDocuments) throw py::value_error("n is out of range: " + std::to_string(n));
        if (data_bytes < 0 || text_bytes < 0 || text_bytes > data_bytes || text_bytes > mh::kMaxCallBytes) {
          throw py::value_error("text_bytes (" + std::to_string(text_bytes) + ") must lie in [0, data_bytes (" +
                                std::to_string(data_bytes) + ")]");
        }
        if (n > 0 && (!a || !b || !unicode || !offsets || !out || !workspace || (data_bytes > 0 && !data))) {
          throw py::value_error("minhash_signatures: a required device pointer is 0");
        }
        mh::Params p{width, num_perm, ngram, unit, seed, reinterpret_cast<const void*>(a),
                     reinterpret_cast<const void*>(b), reinterpret_cast<const void*>(unicode)};
        const mh::Texts t{reinterpret_cast<const unsigned char*>(data), data_bytes,
                          reinterpret_cast<const std::int64_t*>(offsets), n, text_bytes};
        py::gil_scoped_release release;
        check(mh::signatures(p, t, reinterpret_cast<void*>(out), reinterpret_cast<std::uint64_t*>(digests),
                             reinterpret_cast<void*>(workspace), workspace_bytes, reinterpret_cast<void*>(cuda_stream)),
              "minhash_signatures");
      },
      py::arg("width"), py::arg("num_perm"), py::arg("ngram"), py::arg("unit"), py::arg("seed"), py::arg("a"),
      py::arg("b"), py::arg("unicode"), py::arg("data"), py::arg("data_bytes"), py::arg("offsets"), py::arg("n"),
      py::arg("text_bytes"), py::arg("out"), py::arg("digests"), py::arg("workspace"), py::arg("workspace_bytes"),
      py::arg("cuda_stream"),
      "Signatures out[n, num_perm] (uint32 or uint64) and, unless digests is 0, digests[n, 2] (uint64) of the "
      "documents data[offsets[i], offsets[i + 1]): the bytes of mixsieve._core.MinHasher32/64. The caller checks "
      "that offsets (n + 1 int64) do not decrease, lie in [0, data_bytes] and span text_bytes; where the device's "
      "offsets disagree, every slot is the maximum and every digest 0.");
}

}  // namespace cuda_bind
}  // namespace mixsieve
