// libFuzzer target for the safetensors reader. Any input must either raise whale::Error or
// yield tensors that lie inside the file; the bytes of every accepted tensor are read, both
// from the fuzzer's exactly-sized input buffer (so ASan sees any out-of-bounds offset) and
// through SafetensorsFile's mmap, and the two must agree.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir && *dir ? dir : "/tmp") + "/fuzz_safetensors." +
                    std::to_string(::getpid()) + ".safetensors";
    std::atexit([] { ::unlink(scratch_path().c_str()); });
    return p;
  }();
  return path;
}

[[noreturn]] void fail(const char* what, const std::string& name) {
  std::fprintf(stderr, "fuzz_safetensors: %s (tensor '%s')\n", what, name.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<whale::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  try {
    tensors = whale::parse_safetensors_header(data, size, "fuzz", &metadata, &data_start);
  } catch (const whale::Error&) {
    return 0;
  }
  uint64_t checksum = 0;
  for (const auto& t : tensors) {
    if (t.begin > t.end || data_start + t.end > size)
      fail("accepted offsets outside the input", t.name);
    if (uint64_t(t.numel()) * whale::dtype_size(t.dtype) != t.end - t.begin)
      fail("size disagrees with shape", t.name);
    for (uint64_t i = data_start + t.begin; i < data_start + t.end; ++i) checksum += data[i];
  }
  // No two non-empty tensors may share a byte (pairwise: inputs are small).
  for (size_t a = 0; a < tensors.size(); ++a)
    for (size_t b = a + 1; b < tensors.size(); ++b) {
      const auto &x = tensors[a], &y = tensors[b];
      if (x.begin < x.end && y.begin < y.end && x.begin < y.end && y.begin < x.end)
        fail("accepted overlapping tensors", x.name + "' and '" + y.name);
    }

  // The same bytes through the file reader must give the same tensors.
  FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f) return 0;
  const bool written = std::fwrite(data, 1, size, f) == size;
  std::fclose(f);
  if (!written) return 0;
  try {
    whale::SafetensorsFile file(scratch_path());
    if (file.tensors().size() != tensors.size())
      fail("file reader found a different tensor count", "");
    for (const auto& t : file.tensors()) {
      const whale::TensorInfo* found = file.find(t.name);
      if (!found || found->begin != t.begin || found->end != t.end)
        fail("find() disagrees", t.name);
      const uint8_t* mapped = file.data(t);
      if (t.end > t.begin && std::memcmp(mapped, data + data_start + t.begin, t.end - t.begin) != 0)
        fail("mapped bytes differ from the input", t.name);
    }
  } catch (const whale::Error& e) {
    std::fprintf(stderr, "fuzz_safetensors: parsed in memory but the file failed: %s\n", e.what());
    std::abort();
  }
  volatile uint64_t sink = checksum;
  (void)sink;
  return 0;
}
