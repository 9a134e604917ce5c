// safetensors: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then raw data.
// Every header field is validated against the file before any byte is read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mmap.h"

namespace whale {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

// Parses and validates a header held in memory (the fuzz target calls this directly).
// file_size is the whole buffer's size; throws whale::Error naming `source` on any problem.
std::vector<TensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t file_size,
                                                 const std::string& source,
                                                 std::map<std::string, std::string>* metadata,
                                                 uint64_t* data_start);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  uint8_t* data(const TensorInfo& info) const { return file_->data() + data_start_ + info.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// A checkpoint's tensors across one file or shards listed in model.safetensors.index.json.
class SafetensorsSet {
 public:
  // dir holds model.safetensors or model.safetensors.index.json (+ shards); a path to a
  // single .safetensors file also works.
  explicit SafetensorsSet(const std::string& path);
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
    uint8_t* data() const { return file->data(*info); }
  };
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& get(const std::string& name) const;  // throws naming the missing tensor
  const std::map<std::string, Entry>& entries() const { return entries_; }
  std::vector<std::unique_ptr<SafetensorsFile>>& files() { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
  std::string source_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // dtype-encoded bytes, numel * dtype_size
};

// Writes one safetensors file atomically; tensors are laid out in the given order,
// 8-byte aligned as the format recommends.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace whale
