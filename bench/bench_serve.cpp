// Serving benchmark: `whale serve`'s server in-process on a loopback port, driven by C streaming
// clients over HTTP. For each concurrency level it reports aggregate output tokens/s (all
// clients' generated tokens over the wall time) and time to first token (p50, p99), and the
// ratio to one stream's throughput, which is what continuous batching buys (bench_inference
// gives the machine's ceilings for the single-stream figure).
//   bench_serve --model DIR [--concurrency 1,4,16] [--requests 1] [--max-tokens 48] [--prompt-words 4] [--rounds 1]
// Short prompts keep the figure about decode, where batching acts (prefill is batched anyway).
#include <httplib.h>

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "infer/engine.h"
#include "kernels/cpu_features.h"
#include "kernels/linear_bf16.h"
#include "io/checkpoint.h"
#include "serve/server.h"

using namespace whale;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Result {
  int64_t tokens = 0;
  std::vector<double> ttft;
};

// One client: `requests` streaming chat requests in a row.
void client(int port, int id, int requests, int64_t max_tokens, int prompt_words, Result& out) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(600);
  for (int r = 0; r < requests; ++r) {
    std::string words;
    for (int w = 0; w < prompt_words; ++w) words += "word" + std::to_string((id * 131 + r * 17 + w) % 97) + " ";
    json body = {{"messages", {{{"role", "user"}, {"content", words}}}}, {"max_tokens", max_tokens},
                 {"temperature", 1.0}, {"seed", id * 1000 + r}, {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    std::string data;
    const auto t0 = Clock::now();
    bool first = false;
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      data.append(d, n);
      // The first delta with text ("content":"" in the role chunk does not count).
      for (size_t p = 0; !first && (p = data.find("content\":\"", p)) != std::string::npos;) {
        p += 10;
        if (p < data.size() && data[p] != '"') {
          first = true;
          out.ttft.push_back(seconds(Clock::now() - t0));
        }
      }
      return true;
    };
    auto res = c.send(req);
    if (!res || res->status != 200) throw Error("bench_serve", "request failed");
    size_t u = data.rfind("\"completion_tokens\":");
    if (u != std::string::npos) out.tokens += std::stoll(data.substr(u + 20));
  }
}

std::string load_average() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  whale::reexec_with_startup_env(argv);  // OpenBLAS's kernels, OpenMP's wait (cpu_features.h)
  CLI::App app{"whale serving benchmark: aggregate tokens/s and TTFT under concurrent streams"};
  std::string model_dir, levels = "1,4,16";
  int requests = 1, prompt_words = 4, rounds = 1;
  int64_t max_tokens = 48;
  app.add_option("--model", model_dir, "Checkpoint directory with tokenizer.json")->required();
  app.add_option("--concurrency", levels, "Comma-separated stream counts")->capture_default_str();
  app.add_option("--requests", requests, "Requests per client")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "Tokens per answer")->capture_default_str();
  app.add_option("--prompt-words", prompt_words, "Words in each prompt")->capture_default_str();
  app.add_option("--rounds", rounds, "Sweeps over all levels; the median per level is reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    auto model = load_model(model_dir);
    auto tok = tokenizer::Tokenizer::from_file((std::filesystem::path(model_dir) / "tokenizer.json").string());
    std::printf("machine: %d OpenMP threads (bench_inference prints this machine's bandwidth and SGEMM ceilings)\n",
                omp_get_max_threads());
    std::printf("BF16 kernels: %s; load average before: %s\n", bf16_path_name(bf16_path()), load_average().c_str());
    std::printf("model: %s, %.2fB parameters (%.2fB active per token)\n", model_dir.c_str(),
                double(model->config.parameter_count()) / 1e9, double(model->config.active_parameter_count()) / 1e9);
    EngineOptions eo;
    eo.kv_budget_tokens = 1 << 16;
    eo.prefix_reuse = false;  // every prompt differs anyway; measure batching alone
    Engine engine(*model, eo, {int32_t(tok.eos_id())});
    serve::ServerOptions so;
    so.port = 0;
    so.generation.default_max_tokens = max_tokens;
    serve::Server server(engine, tok, so);
    const int port = server.bind();
    std::thread th([&] { server.run(); });
    {
      // Warm-up: the first request pages the mapped weights in and grows scratch buffers.
      Result warm;
      client(port, 9999, 1, 4, prompt_words, warm);
    }
    std::vector<int> counts;
    {
      std::stringstream ss(levels);
      std::string item;
      while (std::getline(ss, item, ',')) counts.push_back(std::stoi(item));
    }
    // Each round runs every level once; on a shared machine the load drifts, so levels are
    // measured in turn `rounds` times and the median per level is reported with its spread.
    std::vector<std::vector<double>> tps_runs(counts.size());
    std::vector<std::vector<double>> ttft_runs(counts.size());
    std::vector<int64_t> token_runs(counts.size(), 0);
    for (int round = 0; round < rounds; ++round)
      for (size_t li = 0; li < counts.size(); ++li) {
        const int n = counts[li];
        std::vector<Result> results(static_cast<size_t>(n));
        std::vector<std::thread> clients;
        const auto t0 = Clock::now();
        for (int i = 0; i < n; ++i)
          clients.emplace_back(client, port, i + 100 * round, requests, max_tokens, prompt_words,
                               std::ref(results[size_t(i)]));
        for (auto& c : clients) c.join();
        const double wall = seconds(Clock::now() - t0);
        int64_t tokens = 0;
        for (const auto& r : results) {
          tokens += r.tokens;
          ttft_runs[li].insert(ttft_runs[li].end(), r.ttft.begin(), r.ttft.end());
        }
        token_runs[li] += tokens;
        tps_runs[li].push_back(double(tokens) / wall);
      }
    std::printf("%-8s %10s %12s %18s %10s %10s %8s\n", "streams", "tokens", "tokens/s", "(min-max)", "TTFT p50",
                "TTFT p99", "vs 1");
    double single = 0;
    for (size_t li = 0; li < counts.size(); ++li) {
      std::vector<double> t = tps_runs[li];
      std::sort(t.begin(), t.end());
      const double median = t[t.size() / 2];
      if (counts[li] == 1) single = median;
      char range[64];
      std::snprintf(range, sizeof range, "(%.2f-%.2f)", t.front(), t.back());
      std::printf("%-8d %10lld %12.2f %18s %9.2fs %9.2fs %7.2fx\n", counts[li], (long long)token_runs[li], median,
                  range, percentile(ttft_runs[li], 0.5), percentile(ttft_runs[li], 0.99),
                  single > 0 ? median / single : 0.0);
    }
    std::printf("load average after: %s (other processes share the cores; the ratio within one run is what counts)\n",
                load_average().c_str());
    server.stop();
    th.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve: %s\n", e.what());
    return 1;
  }
  return 0;
}
