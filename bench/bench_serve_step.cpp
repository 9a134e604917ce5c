// Decode-step benchmark behind bench_serve: Transformer::forward + logits for B sequences of one
// new token each (what the serving engine runs per step, without HTTP, scheduling or sampling),
// for each batch size and BF16 kernel path. Batch sizes and paths are interleaved within each
// repetition, so load from other processes hits them alike; the median step time is reported.
//   bench_serve_step --model DIR [--batches 1,4,16] [--paths amx,avx512bf16,widen] [--reps 8] [--context 32]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "core/error.h"
#include "infer/kv_cache.h"
#include "io/checkpoint.h"
#include "kernels/linear_bf16.h"
#include "model/transformer.h"

using namespace whale;

namespace {

double cpu_seconds() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

struct Batch {
  int size;
  std::vector<std::unique_ptr<KVCache>> caches;
  std::vector<double> seconds;  // per path: step times
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"whale decode-step benchmark: forward + logits for B single-token sequences"};
  std::string model_dir, batches_arg = "1,4,16", paths_arg = "amx,avx512bf16,widen";
  int reps = 8, context = 32;
  app.add_option("--model", model_dir, "Checkpoint directory")->required();
  app.add_option("--batches", batches_arg, "Comma-separated batch sizes")->capture_default_str();
  app.add_option("--paths", paths_arg, "BF16 kernel paths to compare (unsupported ones are skipped)")->capture_default_str();
  app.add_option("--reps", reps, "Steps per batch size and path")->capture_default_str();
  app.add_option("--context", context, "Tokens already cached per sequence")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    auto model = load_model(model_dir);
    const ModelConfig& c = model->config;
    std::vector<Bf16Path> paths;
    std::stringstream ss(paths_arg);
    for (std::string name; std::getline(ss, name, ',');)
      for (Bf16Path p : {Bf16Path::Widen, Bf16Path::Avx512Bf16, Bf16Path::Amx})
        if (name == bf16_path_name(p) && cpu_supports(p)) paths.push_back(p);
    if (paths.empty()) throw Error("--paths", "names no BF16 path this CPU supports");
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::printf("machine: %d OpenMP threads, load average %.2f (shared machine: compare within this run)\n",
                omp_get_max_threads(), load[0]);
    Transformer tr(*model);
    std::vector<Batch> batches;
    const int64_t capacity = context + int64_t(reps) * int64_t(paths.size()) + 8;
    for (int b : parse_ints(batches_arg)) {
      Batch batch{b, {}, {}};
      for (int i = 0; i < b; ++i) batch.caches.push_back(std::make_unique<KVCache>(c, capacity));
      batches.push_back(std::move(batch));
    }
    // Prompts of `context` tokens (one prefill per sequence; pages the weights in as well).
    std::vector<float> hidden, logits;
    for (auto& batch : batches)
      for (int i = 0; i < batch.size; ++i) {
        std::vector<int32_t> p(static_cast<size_t>(context));
        for (int k = 0; k < context; ++k) p[size_t(k)] = int32_t((i * 131 + k * 17 + 5) % c.vocab_size);
        hidden.resize(size_t(context * c.hidden_size));
        tr.forward(p.data(), {SeqSpan{batch.caches[size_t(i)].get(), 0, context, 0}}, hidden.data());
      }
    std::vector<std::vector<std::vector<double>>> times(batches.size(), std::vector<std::vector<double>>(paths.size()));
    auto cpu = times;  // process CPU seconds per step: less swayed by other processes than wall time
    for (int r = 0; r < reps; ++r)
      for (size_t bi = 0; bi < batches.size(); ++bi)
        for (size_t pi = 0; pi < paths.size(); ++pi) {
          set_bf16_path(paths[pi]);
          Batch& batch = batches[bi];
          std::vector<int32_t> ids;
          std::vector<SeqSpan> spans;
          std::vector<int64_t> rows;
          for (int i = 0; i < batch.size; ++i) {
            ids.push_back(int32_t((r * 7 + i * 3 + 11) % c.vocab_size));
            spans.push_back({batch.caches[size_t(i)].get(), i, 1, batch.caches[size_t(i)]->length});
            rows.push_back(i);
          }
          hidden.resize(size_t(batch.size) * size_t(c.hidden_size));
          logits.resize(size_t(batch.size) * size_t(c.vocab_size));
          const auto t0 = std::chrono::steady_clock::now();
          const double c0 = cpu_seconds();
          tr.forward(ids.data(), spans, hidden.data());
          tr.logits(hidden.data(), rows, logits.data());
          times[bi][pi].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          cpu[bi][pi].push_back(cpu_seconds() - c0);
        }
    std::printf("%-8s %-11s %12s %12s %10s %12s %10s\n", "batch", "path", "step ms", "tokens/s", "vs batch 1",
                "CPU ms", "CPU vs 1");
    std::vector<double> single(paths.size(), 0), single_cpu(paths.size(), 0);
    for (size_t bi = 0; bi < batches.size(); ++bi)
      for (size_t pi = 0; pi < paths.size(); ++pi) {
        auto t = times[bi][pi];
        std::sort(t.begin(), t.end());
        const double median = t[t.size() / 2], tps = batches[bi].size / median;
        auto u = cpu[bi][pi];
        std::sort(u.begin(), u.end());
        const double cpu_tps = batches[bi].size / u[u.size() / 2];
        if (batches[bi].size == 1) single[pi] = tps, single_cpu[pi] = cpu_tps;
        std::printf("%-8d %-11s %12.1f %12.1f %9.2fx %12.1f %9.2fx\n", batches[bi].size, bf16_path_name(paths[pi]),
                    median * 1e3, tps, single[pi] > 0 ? tps / single[pi] : 0.0, u[u.size() / 2] * 1e3,
                    single_cpu[pi] > 0 ? cpu_tps / single_cpu[pi] : 0.0);
      }
    getloadavg(load, 3);
    std::printf("load average after: %.2f\n", load[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
