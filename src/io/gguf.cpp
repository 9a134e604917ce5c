#include "io/gguf.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace whale {

namespace {

constexpr uint64_t kMaxDims = 4;  // GGML_MAX_DIMS

bool known_ggml_type(uint32_t t) {
  switch (GgmlType(t)) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0:
    case GgmlType::Q4_0: case GgmlType::Q4_K: case GgmlType::Q6_K: case GgmlType::Q8_K: return true;
  }
  return false;
}

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: return 8;  // at least the length
    case GgufType::ARRAY: return 12;  // at least type + count
  }
  return 0;
}

// Bounds-checked little-endian reader over the header bytes.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t size, const std::string& source) : p_(p), size_(size), source_(source) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      throw Error(source_, "truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                               std::to_string(pos_) + " but the file has " + std::to_string(left()) + " left");
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " (string length)");
    if (n > left())
      throw Error(source_, what + ": string length " + std::to_string(n) + " exceeds the " +
                               std::to_string(left()) + " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const uint8_t* p_;
  size_t size_, pos_ = 0;
  const std::string& source_;
};

GgufType value_type(uint32_t raw, const std::string& source, const std::string& where) {
  if (raw > uint32_t(GgufType::FLOAT64))
    throw Error(source, where + ": unknown value type " + std::to_string(raw) + " (expected 0..12)");
  return GgufType(raw);
}

// A float32 value as the double of its shortest decimal form, so that 1e-6 stored as float
// reads back as the 1e-6 a config.json says (and narrows to the same float again).
double widen(float f) {
  if (!std::isfinite(f)) return double(f);
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

void read_scalar(Cursor& c, GgufType t, GgufValue& v, const std::string& what) {
  switch (t) {
    case GgufType::UINT8: v.u = c.read<uint8_t>(what); break;
    case GgufType::INT8: v.i = c.read<int8_t>(what); break;
    case GgufType::UINT16: v.u = c.read<uint16_t>(what); break;
    case GgufType::INT16: v.i = c.read<int16_t>(what); break;
    case GgufType::UINT32: v.u = c.read<uint32_t>(what); break;
    case GgufType::INT32: v.i = c.read<int32_t>(what); break;
    case GgufType::UINT64: v.u = c.read<uint64_t>(what); break;
    case GgufType::INT64: v.i = c.read<int64_t>(what); break;
    case GgufType::FLOAT32: v.f = widen(c.read<float>(what)); break;
    case GgufType::FLOAT64: v.f = c.read<double>(what); break;
    case GgufType::BOOL: v.u = c.read<uint8_t>(what); break;
    case GgufType::STRING: v.s = c.string(what); break;
    case GgufType::ARRAY: break;  // handled by the caller
  }
}

bool is_signed(GgufType t) { return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 || t == GgufType::INT64; }
bool is_unsigned(GgufType t) {
  return t == GgufType::UINT8 || t == GgufType::UINT16 || t == GgufType::UINT32 || t == GgufType::UINT64 ||
         t == GgufType::BOOL;
}

GgufValue read_value(Cursor& c, GgufType t, const std::string& source, const std::string& key) {
  GgufValue v;
  v.type = t;
  if (t != GgufType::ARRAY) {
    read_scalar(c, t, v, "key '" + key + "'");
    return v;
  }
  v.elem = value_type(c.read<uint32_t>("key '" + key + "' array type"), source, "key '" + key + "' array");
  if (v.elem == GgufType::ARRAY)
    throw Error(source, "key '" + key + "': nested arrays are not supported");
  const uint64_t n = c.read<uint64_t>("key '" + key + "' array length");
  // Each element takes at least scalar_size bytes, so a count the file cannot hold is a lie.
  if (n > c.left() / scalar_size(v.elem))
    throw Error(source, "key '" + key + "': array length " + std::to_string(n) + " of " + gguf_type_name(v.elem) +
                            " cannot fit in the " + std::to_string(c.left()) + " bytes left");
  GgufValue e;
  for (uint64_t k = 0; k < n; ++k) {
    read_scalar(c, v.elem, e, "key '" + key + "' element " + std::to_string(k));
    if (v.elem == GgufType::STRING) v.strings.push_back(std::move(e.s));
    else if (v.elem == GgufType::FLOAT32 || v.elem == GgufType::FLOAT64) v.floats.push_back(e.f);
    else if (is_signed(v.elem)) v.ints.push_back(e.i);
    else v.ints.push_back(int64_t(e.u));
  }
  return v;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "uint8";
    case GgufType::INT8: return "int8";
    case GgufType::UINT16: return "uint16";
    case GgufType::INT16: return "int16";
    case GgufType::UINT32: return "uint32";
    case GgufType::INT32: return "int32";
    case GgufType::FLOAT32: return "float32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "uint64";
    case GgufType::INT64: return "int64";
    case GgufType::FLOAT64: return "float64";
  }
  return "?";
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

GgufHeader GgufHeader::parse(const uint8_t* bytes, size_t size, const std::string& source) {
  GgufHeader h;
  Cursor c(bytes, size, source);
  c.need(4, "magic");
  if (std::memcmp(bytes, "GGUF", 4) != 0) throw Error(source, "bad magic: not a GGUF file (expected 'GGUF')");
  c.read<uint32_t>("magic");
  h.version = c.read<uint32_t>("version");
  if (h.version != 2 && h.version != 3)
    throw Error(source, "GGUF version " + std::to_string(h.version) + " is not supported (expected 2 or 3)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key-value pair takes at least 13 bytes, a tensor description at least 24.
  if (n_kv > c.left() / 13)
    throw Error(source, "metadata count " + std::to_string(n_kv) + " cannot fit in a file of " + std::to_string(size) + " bytes");
  if (n_tensors > c.left() / 24)
    throw Error(source, "tensor count " + std::to_string(n_tensors) + " cannot fit in a file of " + std::to_string(size) + " bytes");
  std::map<std::string, bool> seen;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.string("metadata key " + std::to_string(k));
    if (seen.count(key)) throw Error(source, "duplicate metadata key '" + key + "'");
    seen[key] = true;
    const GgufType t = value_type(c.read<uint32_t>("key '" + key + "' type"), source, "key '" + key + "'");
    GgufValue v = read_value(c, t, source, key);
    if (key == "general.alignment") {
      if (t != GgufType::UINT32 || v.u == 0 || (v.u & (v.u - 1)) != 0)
        throw Error(source, "general.alignment must be a uint32 power of two, got " +
                                (t == GgufType::UINT32 ? std::to_string(v.u) : std::string(gguf_type_name(t))));
      h.alignment = v.u;
    }
    h.kv.emplace_back(std::move(key), std::move(v));
  }
  seen.clear();
  h.tensors.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.string("tensor " + std::to_string(k) + " name");
    const std::string where = source + ": tensor '" + t.name + "'";
    if (seen.count(t.name)) throw Error(where, "appears twice");
    seen[t.name] = true;
    const uint32_t n_dims = c.read<uint32_t>("tensor '" + t.name + "' n_dims");
    if (n_dims == 0 || n_dims > kMaxDims)
      throw Error(where, "has " + std::to_string(n_dims) + " dimensions (expected 1 to 4)");
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("tensor '" + t.name + "' dimension");
      if (ne == 0 || ne > (uint64_t(1) << 40) || uint64_t(numel) > (uint64_t(1) << 62) / ne)
        throw Error(where, "dimension " + std::to_string(d) + " is " + std::to_string(ne) +
                               " (expected a positive size whose product stays below 2^62)");
      t.ne.push_back(int64_t(ne));
      numel *= int64_t(ne);
    }
    const uint32_t type = c.read<uint32_t>("tensor '" + t.name + "' type");
    if (!known_ggml_type(type))
      throw Error(where, "has ggml type id " + std::to_string(type) +
                             ", which whale does not read (supported: f32 0, f16 1, q4_0 2, q8_0 8, q4_K 12, q6_K 14, bf16 30)");
    t.type = GgmlType(type);
    t.offset = c.read<uint64_t>("tensor '" + t.name + "' offset");
    if (t.ne[0] % ggml_block_size(t.type) != 0)
      throw Error(where, "first dimension " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                             ggml_type_name(t.type) + " block size " + std::to_string(ggml_block_size(t.type)));
    t.nbytes = uint64_t(numel / ggml_block_size(t.type)) * ggml_type_size(t.type);
    if (t.offset % h.alignment != 0)
      throw Error(where, "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                             std::to_string(h.alignment));
    h.tensors.push_back(std::move(t));
  }
  h.data_start = (c.pos() + h.alignment - 1) / h.alignment * h.alignment;
  const uint64_t data_size = size >= h.data_start ? size - h.data_start : 0;
  for (const GgufTensorInfo& t : h.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw Error(source + ": tensor '" + t.name + "'",
                  "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                      ") runs past the end of the data section (" + std::to_string(data_size) + " bytes): truncated file or lying offset");
  }
  return h;
}

GgufFile::GgufFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  header_ = GgufHeader::parse(file_->data(), file_->size(), path);
  for (size_t i = 0; i < header_.kv.size(); ++i) by_key_[header_.kv[i].first] = i;
  for (size_t i = 0; i < header_.tensors.size(); ++i) by_name_[header_.tensors[i].name] = i;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) throw Error(path(), "missing metadata key '" + key + "'");
  return header_.kv[it->second].second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = get(key);
  if (is_signed(v.type)) return v.i;
  if (is_unsigned(v.type)) {
    if (v.u > uint64_t(std::numeric_limits<int64_t>::max()))
      throw Error(path(), "key '" + key + "' = " + std::to_string(v.u) + " is out of range");
    return int64_t(v.u);
  }
  throw Error(path(), "key '" + key + "' has type " + gguf_type_name(v.type) + "; expected an integer");
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type == GgufType::FLOAT32 || v.type == GgufType::FLOAT64) return v.f;
  if (is_signed(v.type) || is_unsigned(v.type)) return double(get_int(key));
  throw Error(path(), "key '" + key + "' has type " + gguf_type_name(v.type) + "; expected a number");
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const GgufValue& v = get(key);
  if (v.type != GgufType::BOOL) throw Error(path(), "key '" + key + "' has type " + gguf_type_name(v.type) + "; expected bool");
  return v.u != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::STRING)
    throw Error(path(), "key '" + key + "' has type " + gguf_type_name(v.type) + "; expected string");
  return v.s;
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find(name);
  if (!t) throw Error(path(), "missing tensor '" + name + "'");
  return *t;
}

// ---- writer ---------------------------------------------------------------------------

void GgufWriter::add(const std::string& key, const GgufValue& value) {
  for (const auto& [k, v] : kv_)
    if (k == key) throw Error("gguf writer", "metadata key '" + key + "' added twice");
  kv_.emplace_back(key, value);
}

namespace {

GgufValue typed(GgufType type, GgufType elem = GgufType::UINT8) {
  GgufValue g;
  g.type = type;
  g.elem = elem;
  return g;
}

}  // namespace

void GgufWriter::add_string(const std::string& key, const std::string& v) {
  GgufValue g = typed(GgufType::STRING);
  g.s = v;
  add(key, g);
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  GgufValue g = typed(GgufType::UINT32);
  g.u = v;
  add(key, g);
}

void GgufWriter::add_f32(const std::string& key, float v) {
  GgufValue g = typed(GgufType::FLOAT32);
  g.f = v;
  add(key, g);
}

void GgufWriter::add_bool(const std::string& key, bool v) {
  GgufValue g = typed(GgufType::BOOL);
  g.u = v;
  add(key, g);
}

void GgufWriter::add_strings(const std::string& key, std::vector<std::string> v) {
  GgufValue g = typed(GgufType::ARRAY, GgufType::STRING);
  g.strings = std::move(v);
  add(key, g);
}

void GgufWriter::add_i32s(const std::string& key, const std::vector<int64_t>& v) {
  GgufValue g = typed(GgufType::ARRAY, GgufType::INT32);
  g.ints = v;
  add(key, g);
}

void GgufWriter::add_f32s(const std::string& key, const std::vector<double>& v) {
  GgufValue g = typed(GgufType::ARRAY, GgufType::FLOAT32);
  g.floats = v;
  add(key, g);
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                            std::function<void(std::vector<uint8_t>&)> produce) {
  Pending p;
  p.info.name = name;
  p.info.type = type;
  p.info.ne = std::move(ne);
  int64_t rows = 1;
  for (size_t d = 1; d < p.info.ne.size(); ++d) rows *= p.info.ne[d];
  p.info.nbytes = ggml_row_size(type, p.info.ne.at(0)) * uint64_t(rows);
  p.produce = std::move(produce);
  tensors_.push_back(std::move(p));
}

namespace {

struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void scalar(GgufType t, const GgufValue& v, size_t k) {
    const bool arr = v.type == GgufType::ARRAY;
    const int64_t iv = arr ? (k < v.ints.size() ? v.ints[k] : 0) : (is_signed(t) ? v.i : int64_t(v.u));
    const double fv = arr ? (k < v.floats.size() ? v.floats[k] : 0.0) : v.f;
    switch (t) {
      case GgufType::UINT8: case GgufType::BOOL: put<uint8_t>(uint8_t(iv)); break;
      case GgufType::INT8: put<int8_t>(int8_t(iv)); break;
      case GgufType::UINT16: put<uint16_t>(uint16_t(iv)); break;
      case GgufType::INT16: put<int16_t>(int16_t(iv)); break;
      case GgufType::UINT32: put<uint32_t>(uint32_t(iv)); break;
      case GgufType::INT32: put<int32_t>(int32_t(iv)); break;
      case GgufType::UINT64: put<uint64_t>(uint64_t(iv)); break;
      case GgufType::INT64: put<int64_t>(iv); break;
      case GgufType::FLOAT32: put<float>(float(fv)); break;
      case GgufType::FLOAT64: put<double>(fv); break;
      case GgufType::STRING: str(arr ? v.strings.at(k) : v.s); break;
      case GgufType::ARRAY: break;
    }
  }
};

}  // namespace

void GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& on_tensor) const {
  constexpr uint64_t alignment = 32;
  Bytes h;
  h.b.insert(h.b.end(), {'G', 'G', 'U', 'F'});
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& [key, v] : kv_) {
    h.str(key);
    h.put<uint32_t>(uint32_t(v.type));
    if (v.type == GgufType::ARRAY) {
      h.put<uint32_t>(uint32_t(v.elem));
      const size_t n = v.elem == GgufType::STRING ? v.strings.size()
                       : (v.elem == GgufType::FLOAT32 || v.elem == GgufType::FLOAT64) ? v.floats.size()
                                                                                      : v.ints.size();
      h.put<uint64_t>(n);
      for (size_t k = 0; k < n; ++k) h.scalar(v.elem, v, k);
    } else {
      h.scalar(v.type, v, 0);
    }
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const Pending& p : tensors_) {
    h.str(p.info.name);
    h.put<uint32_t>(uint32_t(p.info.ne.size()));
    for (int64_t d : p.info.ne) h.put<uint64_t>(uint64_t(d));
    h.put<uint32_t>(uint32_t(p.info.type));
    h.put<uint64_t>(offset);
    offsets.push_back(offset);
    offset += (p.info.nbytes + alignment - 1) / alignment * alignment;
  }
  h.b.resize((h.b.size() + alignment - 1) / alignment * alignment, 0);
  AtomicWriter out(path);
  out.write(h.b.data(), h.b.size());
  std::vector<uint8_t> buf;
  const uint8_t zeros[alignment] = {};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Pending& p = tensors_[i];
    buf.clear();
    p.produce(buf);
    if (buf.size() != p.info.nbytes)
      throw Error(path + ": tensor '" + p.info.name + "'", "produced " + std::to_string(buf.size()) +
                                                               " bytes; expected " + std::to_string(p.info.nbytes));
    out.write(buf.data(), buf.size());
    const size_t pad = size_t((alignment - p.info.nbytes % alignment) % alignment);
    if (pad) out.write(zeros, pad);
    if (on_tensor) on_tensor(i + 1, tensors_.size());
  }
  out.commit();
}

}  // namespace whale
