// Tokenizer throughput: encode MB/s on 1 and 2 threads for English and mixed-language text,
// next to two ceilings of this machine (memcpy bandwidth, and PCRE2 pre-tokenization alone,
// which every encode must pay), plus BPE training time. The JS reference figures come from
// bench/tokenizer_js.sh on the same files.
//   bench_tokenizer [--tokenizer F] [--english F] [--mixed F] [--train-dir D]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/mmap.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

using namespace whale::tokenizer;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A .jsonl file is one JSON string per line; anything else is plain text.
std::string load_text(const std::string& path) {
  std::string raw = whale::read_text_file(path);
  if (!path.ends_with(".jsonl")) return raw;
  std::string text;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\n', start);
    if (end == std::string::npos) end = raw.size();
    if (end > start) text += nlohmann::json::parse(raw.substr(start, end - start)).get<std::string>() + "\n";
    start = end + 1;
  }
  return text;
}

// Documents of about 16 KB cut at line ends: the unit of parallel work (encode_batch).
std::vector<std::string> documents(const std::string& text) {
  std::vector<std::string> docs;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.size(), start + 16384);
    size_t nl = text.find('\n', end);
    end = nl == std::string::npos ? text.size() : nl + 1;
    docs.push_back(text.substr(start, end - start));
    start = end;
  }
  return docs;
}

// Best of `repeats` runs, in MB/s of UTF-8 input.
template <class F>
double best_rate(size_t bytes, int repeats, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return double(bytes) / 1e6 / best;
}

void bench_text(const Tokenizer& tok, const char* label, const std::string& text) {
  auto docs = documents(text);
  size_t ids = 0;
  double one = best_rate(text.size(), 3, [&] {
    auto r = tok.encode_batch(docs, false, 1);
    ids = 0;
    for (auto& v : r) ids += v.size();
  });
  double two = best_rate(text.size(), 3, [&] { tok.encode_batch(docs, false, 2); });
  PreTokenizeScratch scratch;
  std::vector<Span> pieces;
  size_t n_pieces = 0;
  double pre = best_rate(text.size(), 3, [&] {
    n_pieces = 0;
    for (auto& d : docs) {
      tok.pre_tokenizer().split(d, pieces, scratch);
      n_pieces += pieces.size();
    }
  });
  std::printf("%-8s %7.2f MB %9zu ids  1 thread %6.1f MB/s  2 threads %6.1f MB/s  (pre-tokenize only, 1 thread: %6.1f MB/s)\n",
              label, double(text.size()) / 1e6, ids, one, two, pre);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenizer benchmark"};
  // CMake compiles with absolute paths, so the repository is two levels above this file.
  std::string source = std::filesystem::path(__FILE__).parent_path().parent_path().string();
  std::string tokenizer_path = source + "/data/tokenizers/deepseek_v3/tokenizer.json";
  std::string english = "/work/shared/data/corpus/austen/emma.txt";
  std::string mixed = source + "/tests/tokenizer/data/corpus.jsonl";
  std::string train_dir = "/work/shared/data/corpus";
  int vocab = 8192;
  app.add_option("--tokenizer", tokenizer_path)->capture_default_str();
  app.add_option("--english", english, "English text (.txt) or JSONL")->capture_default_str();
  app.add_option("--mixed", mixed, "Mixed-language text (.txt) or JSONL")->capture_default_str();
  app.add_option("--train-dir", train_dir, "Folder of .txt files for the training figure ('' to skip)")->capture_default_str();
  app.add_option("--vocab-size", vocab)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // Ceiling 1: memory bandwidth, as a plain copy of 256 MB.
  std::vector<char> a(size_t(256) << 20, 1), b(a.size());
  double copy = best_rate(a.size(), 3, [&] { std::memcpy(b.data(), a.data(), a.size()); });
  std::printf("machine: memcpy %.0f MB/s (one thread)\n", copy);

  auto t0 = Clock::now();
  Tokenizer tok = Tokenizer::from_file(tokenizer_path);
  std::printf("load %s: %.2f s\n", tokenizer_path.c_str(), seconds_since(t0));
  if (std::filesystem::exists(english)) bench_text(tok, "english", load_text(english));
  if (std::filesystem::exists(mixed)) bench_text(tok, "mixed", load_text(mixed));

  if (!train_dir.empty() && std::filesystem::exists(train_dir)) {
    std::vector<std::string> files;
    for (auto& e : std::filesystem::recursive_directory_iterator(train_dir))
      if (e.path().extension() == ".txt") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    TrainOptions options;
    options.vocab_size = vocab;
    options.threads = 2;
    TrainStats stats;
    train_bpe(files, options, nullptr, &stats);
    std::printf("train: %d-token vocab from %.1f MB (%zu files, %zu distinct words) on 2 threads: %.2f s\n",
                stats.vocab_size, double(stats.bytes) / 1e6, files.size(), stats.distinct_words, stats.seconds);
  }
  return 0;
}
