#include "cli/util.h"

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/mmap.h"

namespace whale::cli {

std::vector<int32_t> parse_token_list(const std::string& text, const std::string& option) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    char* rest = nullptr;
    errno = 0;
    long long v = item.empty() ? -1 : std::strtoll(item.c_str(), &rest, 10);
    if (item.empty() || errno != 0 || *rest != '\0' || v < 0 || v > INT32_MAX)
      throw Error(option, "'" + item + "' is not a token id (expected comma-separated non-negative integers)");
    ids.push_back(int32_t(v));
    start = end + 1;
  }
  return ids;
}

AttentionMode parse_attention_mode(const std::string& text) {
  if (text == "auto") return AttentionMode::Auto;
  if (text == "absorb" || text == "absorbed") return AttentionMode::Absorbed;
  if (text == "naive") return AttentionMode::Naive;
  throw Error("--attn", "'" + text + "' is not a mode (expected auto, absorb or naive)");
}

void add_repack_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--repack", *value,
                  "Repack Q8_0 weights for the AVX-512 VNNI kernels at load (same output, faster decode, the weights "
                  "then live in anonymous memory): auto (when they fit in free memory), on or off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
}

void apply_repack(Model& model, const std::string& value) {
  model.repack_policy = value == "on" ? WeightRepack::On : value == "off" ? WeightRepack::Off : WeightRepack::Auto;
}

void write_f32_file(const std::string& path, const std::vector<float>& values) {
  static_assert(sizeof(float) == 4);
  write_file_atomic(path, values.data(), values.size() * sizeof(float));  // x86-64 is little-endian
}

std::unique_ptr<tokenizer::Tokenizer> take_tokenizer(Model& model) {
  if (model.tokenizer) return std::move(model.tokenizer);
  const std::string path = (std::filesystem::path(model.source) / "tokenizer.json").string();
  if (model.gguf || !std::filesystem::exists(path)) return nullptr;
  return std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(path));
}

}  // namespace whale::cli
