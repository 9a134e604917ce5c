// libFuzzer target for the GGUF reader. Any input must either raise whale::Error or yield
// tensors whose bytes lie inside the input; every accepted tensor's first row is dequantised
// from the fuzzer's exactly-sized buffer (so ASan sees an out-of-bounds offset), and the
// same bytes read through GgufFile's mmap must give the same header.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "kernels/quant.h"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir && *dir ? dir : "/tmp") + "/fuzz_gguf." + std::to_string(::getpid()) + ".gguf";
    std::atexit([] { ::unlink(scratch_path().c_str()); });
    return p;
  }();
  return path;
}

[[noreturn]] void fail(const char* what, const std::string& name) {
  std::fprintf(stderr, "fuzz_gguf: %s (tensor '%s')\n", what, name.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  whale::GgufHeader header;
  try {
    header = whale::GgufHeader::parse(data, size, "fuzz");
  } catch (const whale::Error&) {
    return 0;
  }
  std::vector<float> row;
  for (const auto& t : header.tensors) {
    if (header.data_start + t.offset + t.nbytes > size) fail("accepted a tensor past the end of the input", t.name);
    if (t.nbytes != size_t(t.numel() / whale::ggml_block_size(t.type)) * whale::ggml_type_size(t.type))
      fail("size disagrees with shape and type", t.name);
    const int64_t n = std::min<int64_t>(t.ne[0], 4096);
    const int64_t block = whale::ggml_block_size(t.type);
    const int64_t k = n / block * block;
    row.resize(size_t(k));
    if (k > 0) whale::dequantize_row(t.type, data + header.data_start + t.offset, row.data(), k);
  }
  FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f) return 0;
  const bool written = std::fwrite(data, 1, size, f) == size;
  std::fclose(f);
  if (!written || size == 0) return 0;
  try {
    whale::GgufFile file(scratch_path());
    if (file.tensors().size() != header.tensors.size() || file.header().kv.size() != header.kv.size())
      fail("file reader disagrees with the in-memory parse", "");
    for (const auto& t : file.tensors())
      if (file.find(t.name) != &t) fail("find() disagrees", t.name);
  } catch (const whale::Error& e) {
    std::fprintf(stderr, "fuzz_gguf: parsed in memory but the file failed: %s\n", e.what());
    std::abort();
  }
  return 0;
}
