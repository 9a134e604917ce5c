// GGUF (ggml's single-file model format, version 2 and 3): the container only.
//   magic "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count,
//   kv_count x (string key, uint32 value type, value),
//   tensor_count x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset),
//   padding to general.alignment (default 32), then the tensor data; offsets are relative to it.
// Strings are uint64 length + bytes; arrays are uint32 element type + uint64 count + elements.
// ne[0] is the contiguous dimension, so a PyTorch [out, in] matrix has ne = {in, out}.
// Every field is checked against the file before use: bad input throws whale::Error naming
// the file, the key or tensor, and what was expected.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap.h"
#include "kernels/quant.h"

namespace whale {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars live in the field their type implies; arrays (one level, as
// ggml writes them) keep their elements in `strings`, `ints` or `floats`.
struct GgufValue {
  GgufType type = GgufType::UINT32;
  GgufType elem = GgufType::UINT8;  // arrays only
  uint64_t u = 0;                   // unsigned integers, bool
  int64_t i = 0;                    // signed integers
  double f = 0.0;                   // FLOAT32 / FLOAT64
  std::string s;
  std::vector<std::string> strings;
  std::vector<int64_t> ints;    // integer and bool arrays (UINT64 values above INT64_MAX wrap)
  std::vector<double> floats;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] contiguous
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;      // from the start of the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  std::vector<int64_t> shape() const;  // row-major (PyTorch) order: ne reversed
};

// A parsed header. parse() reads only the header; the data section may be absent (the fuzz
// target passes arbitrary bytes); file_size is the size the offsets are checked against.
struct GgufHeader {
  uint32_t version = 3;
  std::vector<std::pair<std::string, GgufValue>> kv;  // in file order
  std::vector<GgufTensorInfo> tensors;
  uint64_t alignment = 32;
  uint64_t data_start = 0;
  static GgufHeader parse(const uint8_t* bytes, size_t size, const std::string& source);
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // memory-maps and validates
  const std::string& path() const { return file_->path(); }
  const GgufHeader& header() const { return header_; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }

  bool has(const std::string& key) const { return by_key_.count(key) != 0; }
  const GgufValue& get(const std::string& key) const;  // throws naming the missing key
  // Typed getters: any integer type converts to an integer (range checked), any integer or
  // float type to a double; fallback versions return the fallback when the key is absent.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

  const GgufTensorInfo* find(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws when missing
  const uint8_t* data(const GgufTensorInfo& t) const { return file_->data() + header_.data_start + t.offset; }

 private:
  std::unique_ptr<MappedFile> file_;
  GgufHeader header_;
  std::map<std::string, size_t> by_key_, by_name_;
};

// Streams a GGUF file: metadata and tensor descriptions first, then each tensor's bytes from
// its producer, one at a time, so a model larger than memory can be written. Atomic.
class GgufWriter {
 public:
  void add(const std::string& key, const GgufValue& value);
  void add_string(const std::string& key, const std::string& v);
  void add_u32(const std::string& key, uint32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_strings(const std::string& key, std::vector<std::string> v);
  void add_i32s(const std::string& key, const std::vector<int64_t>& v);
  void add_f32s(const std::string& key, const std::vector<double>& v);
  // ne in ggml order; produce must append exactly ggml_row_size(type, ne[0]) * rows bytes.
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                  std::function<void(std::vector<uint8_t>&)> produce);
  // on_tensor(index, count) is called after each tensor is written (progress).
  void write(const std::string& path, const std::function<void(size_t, size_t)>& on_tensor = {}) const;
  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct Pending {
    GgufTensorInfo info;
    std::function<void(std::vector<uint8_t>&)> produce;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Pending> tensors_;
};

}  // namespace whale
