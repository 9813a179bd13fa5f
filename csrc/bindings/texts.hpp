// Reading documents from Python without copying their text: a sequence of str/bytes or an Arrow
// string array (the C data interface) becomes UTF-8 views. Shared by mixsieve._core (the CPU
// MinHash) and mixsieve._core_cuda (which packs the views into one buffer for the GPU).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mixsieve_bind {

namespace py = pybind11;

// UTF-8 views of a sequence of str/bytes, kept alive by `owners` while the GIL is released.
struct TextBatch {
  std::vector<py::object> owners;
  std::vector<std::string_view> views;
  std::size_t total_bytes = 0;
};

inline std::string_view text_view(const py::handle& item, std::size_t index) {
  PyObject* o = item.ptr();
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(o, &n);
    if (!p) {
      PyErr_Clear();
      throw py::value_error("texts[" + std::to_string(index) +
                            "] cannot be encoded as UTF-8 (it holds a lone surrogate)");
    }
    return {p, static_cast<std::size_t>(n)};
  }
  if (PyBytes_Check(o)) {
    return {PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o))};
  }
  throw py::type_error("texts[" + std::to_string(index) + "] is " +
                       std::string(Py_TYPE(o)->tp_name) + ", expected str or bytes");
}

// The Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html).
struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  std::int64_t flags, n_children;
  ArrowSchema** children;
  ArrowSchema* dictionary;
  void (*release)(ArrowSchema*);
  void* private_data;
};
struct ArrowArray {
  std::int64_t length, null_count, offset, n_buffers, n_children;
  const void** buffers;
  ArrowArray** children;
  ArrowArray* dictionary;
  void (*release)(ArrowArray*);
  void* private_data;
};

// Views into an Arrow utf8 / large_utf8 array (anything with __arrow_c_array__, e.g. a
// pyarrow.Array), without copying the text. Nulls are empty documents. The capsules, which
// own the Arrow buffers, are kept in `owners`.
template <class Offset>
void arrow_views(const ArrowArray* arr, TextBatch& batch) {
  const auto* valid = static_cast<const std::uint8_t*>(arr->buffers[0]);
  const auto* offsets = static_cast<const Offset*>(arr->buffers[1]);
  const auto* data = static_cast<const char*>(arr->buffers[2]);
  const std::int64_t n = arr->length, o = arr->offset;
  batch.views.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t j = o + i;
    if (valid && !((valid[j >> 3] >> (j & 7)) & 1)) {
      batch.views.emplace_back();
      continue;
    }
    const auto b = static_cast<std::int64_t>(offsets[j]), e = static_cast<std::int64_t>(offsets[j + 1]);
    if (b < 0 || e < b) throw py::value_error("Arrow array has invalid offsets at element " + std::to_string(i));
    batch.views.emplace_back(data + b, static_cast<std::size_t>(e - b));
    batch.total_bytes += static_cast<std::size_t>(e - b);
  }
}

inline bool collect_arrow(const py::handle& texts, TextBatch& batch) {
  if (!py::hasattr(texts, "__arrow_c_array__")) return false;
  py::tuple caps = texts.attr("__arrow_c_array__")();
  if (caps.size() != 2) throw py::type_error("__arrow_c_array__ must return (schema, array) capsules");
  auto* schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(caps[0].ptr(), "arrow_schema"));
  auto* arr = static_cast<ArrowArray*>(PyCapsule_GetPointer(caps[1].ptr(), "arrow_array"));
  if (!schema || !arr) throw py::error_already_set();
  const std::string format = schema->format ? schema->format : "";
  if ((format != "u" && format != "U") || arr->n_buffers != 3) {
    throw py::type_error("an Arrow array of texts must have type string (utf8) or large_string, got format '" +
                         format + "'");
  }
  batch.owners.push_back(py::reinterpret_borrow<py::object>(caps));
  if (format == "u") {
    arrow_views<std::int32_t>(arr, batch);
  } else {
    arrow_views<std::int64_t>(arr, batch);
  }
  return true;
}

inline TextBatch collect_texts(const py::handle& texts) {
  {
    TextBatch arrow;
    if (collect_arrow(texts, arrow)) return arrow;
  }
  if (PyUnicode_Check(texts.ptr()) || PyBytes_Check(texts.ptr())) {
    throw py::type_error("texts must be a sequence of str, not a single " +
                         std::string(Py_TYPE(texts.ptr())->tp_name) + " (wrap it in a list)");
  }
  TextBatch batch;
  py::sequence seq = py::reinterpret_borrow<py::sequence>(texts);
  const std::size_t n = py::len(seq);
  batch.owners.reserve(n);
  batch.views.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    py::object item = seq[i];
    batch.views.push_back(text_view(item, i));
    batch.total_bytes += batch.views.back().size();
    batch.owners.push_back(std::move(item));
  }
  return batch;
}

}  // namespace mixsieve_bind
