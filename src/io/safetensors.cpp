#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace whale {

using json = nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
constexpr uint64_t kMaxHeader = 512ull << 20;  // far beyond any real header; stops absurd allocs
}

std::vector<TensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t file_size,
                                                 const std::string& source,
                                                 std::map<std::string, std::string>* metadata,
                                                 uint64_t* data_start) {
  if (file_size < 8)
    throw Error(source, "file is " + std::to_string(file_size) +
                            " bytes; a safetensors file needs at least an 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeader || header_len > file_size - 8)
    throw Error(source, "header length " + std::to_string(header_len) + " exceeds the file size " +
                            std::to_string(file_size) + " (truncated or not a safetensors file)");
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::exception& e) {
    throw Error(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw Error(source, "header must be a JSON object");
  const uint64_t start = 8 + header_len;
  const uint64_t data_size = file_size - start;
  std::vector<TensorInfo> tensors;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const std::string where = source + ": tensor '" + name + "'";
    if (name == "__metadata__") {
      if (!it.value().is_object()) throw Error(where, "__metadata__ must be an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) throw Error(where, "metadata value '" + m.key() + "' must be a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const json& entry = it.value();
    if (!entry.is_object()) throw Error(where, "entry must be an object");
    TensorInfo info;
    info.name = name;
    if (!entry.contains("dtype") || !entry["dtype"].is_string())
      throw Error(where, "missing string field 'dtype'");
    const std::string dtype = entry["dtype"].get<std::string>();
    if (!dtype_from_name(dtype, &info.dtype))
      throw Error(where, "unsupported dtype '" + dtype + "' (expected F32, F16, BF16, F8_E4M3, I64, I32 or U8)");
    if (!entry.contains("shape") || !entry["shape"].is_array())
      throw Error(where, "missing array field 'shape'");
    uint64_t numel = 1;
    for (const json& d : entry["shape"]) {
      if (!d.is_number_unsigned()) throw Error(where, "shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && numel > (1ull << 50) / dim))
        throw Error(where, "shape is too large");
      numel *= dim;
      info.shape.push_back(int64_t(dim));
    }
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2 || !entry["data_offsets"][0].is_number_unsigned() ||
        !entry["data_offsets"][1].is_number_unsigned())
      throw Error(where, "data_offsets must be [begin, end] non-negative integers");
    info.begin = entry["data_offsets"][0].get<uint64_t>();
    info.end = entry["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end)
      throw Error(where, "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                             "] are reversed (begin after end)");
    if (info.end > data_size)
      throw Error(where, "data_offsets [" + std::to_string(info.begin) + ", " +
                             std::to_string(info.end) + "] lie outside the data section of " +
                             std::to_string(data_size) + " bytes");
    if (info.end - info.begin != numel * dtype_size(info.dtype))
      throw Error(where, "data_offsets span " + std::to_string(info.end - info.begin) +
                             " bytes but shape and dtype need " +
                             std::to_string(numel * dtype_size(info.dtype)));
    tensors.push_back(std::move(info));
  }
  // Overlapping tensors would alias each other's bytes: reject.
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  // Compare each tensor with the furthest-reaching one before it, not just its neighbour: an
  // empty tensor sorted in between must not hide an overlap.
  const TensorInfo* reach = nullptr;
  for (const TensorInfo* t : sorted) {
    if (t->begin == t->end) continue;
    if (reach && t->begin < reach->end)
      throw Error(source, "tensors '" + reach->name + "' and '" + t->name + "' overlap in the data section");
    if (!reach || t->end > reach->end) reach = t;
  }
  if (data_start) *data_start = start;
  return tensors;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)) {
  tensors_ = parse_safetensors_header(file_->data(), file_->size(), path, &metadata_, &data_start_);
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

SafetensorsSet::SafetensorsSet(const std::string& path) : source_(path) {
  namespace fs = std::filesystem;
  std::vector<std::string> shard_paths;
  if (fs::is_directory(path)) {
    const fs::path index = fs::path(path) / "model.safetensors.index.json";
    const fs::path single = fs::path(path) / "model.safetensors";
    if (fs::exists(index)) {
      json j;
      try {
        j = json::parse(read_text_file(index.string()));
      } catch (const json::exception& e) {
        throw Error(index.string(), std::string("not valid JSON: ") + e.what());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object())
        throw Error(index.string(), "missing object field 'weight_map'");
      std::vector<std::string> names;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        if (!it.value().is_string()) throw Error(index.string(), "weight_map['" + it.key() + "'] must be a file name");
        std::string shard = it.value().get<std::string>();
        if (shard.find('/') != std::string::npos)
          throw Error(index.string(), "shard name '" + shard + "' must be a plain file name");
        if (std::find(names.begin(), names.end(), shard) == names.end()) names.push_back(shard);
      }
      for (const auto& n : names) shard_paths.push_back((fs::path(path) / n).string());
    } else if (fs::exists(single)) {
      shard_paths.push_back(single.string());
    } else {
      // Any *.safetensors files in the directory, in name order.
      for (const auto& e : fs::directory_iterator(path))
        if (e.path().extension() == ".safetensors") shard_paths.push_back(e.path().string());
      std::sort(shard_paths.begin(), shard_paths.end());
      if (shard_paths.empty())
        throw Error(path, "no model.safetensors, model.safetensors.index.json or *.safetensors found");
    }
  } else {
    shard_paths.push_back(path);
  }
  for (const auto& p : shard_paths) {
    files_.push_back(std::make_unique<SafetensorsFile>(p));
    const SafetensorsFile* f = files_.back().get();
    for (const auto& t : f->tensors()) {
      if (entries_.count(t.name))
        throw Error(p, "tensor '" + t.name + "' also appears in " + entries_[t.name].file->path());
      entries_[t.name] = Entry{f, &t};
    }
  }
}

const SafetensorsSet::Entry& SafetensorsSet::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(source_, "missing tensor '" + name + "'");
  return it->second;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= uint64_t(d);
    const uint64_t bytes = numel * dtype_size(t.dtype);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offsets.push_back(offset);
    offset += bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align the data section
  AtomicWriter out(path);
  uint8_t length[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(n >> (8 * i));
  out.write(length, 8);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= uint64_t(d);
    out.write(t.data, numel * dtype_size(t.dtype));
  }
  out.commit();
}

}  // namespace whale
