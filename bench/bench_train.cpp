// Training benchmark: tokens/s and model FLOP utilisation (achieved FLOP/s over the SGEMM peak
// measured here) of forward + backward + AdamW on random tokens, and peak memory.
//   bench_train --config bench/configs/train-10m.json [--batch 8 --seq-len 128 --steps 5 --precision fp32]
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "train/optimizer.h"

using namespace whale;
using Clock = std::chrono::steady_clock;

static double sgemm_peak() {
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    auto t = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / std::chrono::duration<double>(Clock::now() - t).count() / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  CLI::App app{"whale training benchmark"};
  std::string config, precision = "fp32";
  int64_t B = 8, T = 128, steps = 5;
  double mtp_lambda = 0.3;
  app.add_option("--config", config, "Model config.json")->required();
  app.add_option("--batch", B)->capture_default_str();
  app.add_option("--seq-len", T)->capture_default_str();
  app.add_option("--steps", steps, "Timed steps (after one warm-up step)")->capture_default_str();
  app.add_option("--precision", precision, "fp32, bf16 or fp8 (simulated)")->capture_default_str();
  app.add_option("--mtp-lambda", mtp_lambda)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const double peak = sgemm_peak();
    ModelConfig c = load_model_config(config);
    InitOptions init;
    init.seed = 1;
    auto model = init_model(c, init);
    for (auto& l : model->weights.mtp) {
      l.embed_tokens = model->weights.embed_tokens;
      l.shared_head_head = model->weights.lm_head;
    }
    TrainGraph graph(*model);
    graph.set_precision(precision);
    Gradients grads(*model);
    AdamW opt(*model, grads, {});
    Rng rng(2);
    std::vector<int32_t> tokens(size_t(B * (T + 1)));
    LossOptions lo;
    lo.mtp_lambda = mtp_lambda;
    lo.balance_alpha = 1e-4;
    double seconds = 0;
    for (int64_t s = 0; s <= steps; ++s) {
      for (auto& t : tokens) t = int32_t(rng.next() % uint64_t(c.vocab_size));
      auto t0 = Clock::now();
      grads.zero();
      TrainBatch batch{B, T, tokens.data(), nullptr};
      graph.forward_backward(batch, lo, grads);
      opt.clip_grad_norm(1.0);
      opt.step(1e-3);
      if (s > 0) seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    const double tps = double(B * T * steps) / seconds;
    // 6 FLOPs per active weight per token (forward 2, backward 4) plus attention's
    // QK^T and PV: 2 * 2 * T/2 * heads * (qk_head_dim + v_head_dim) per token and layer, x3.
    int64_t active = c.active_parameter_count();
    double per_token = 6.0 * double(active);
    const double attn = 3.0 * 2.0 * double(T) * double(c.num_attention_heads) *
                        double(c.qk_head_dim() + c.v_head_dim) * double(c.num_hidden_layers);
    per_token += attn;
    if (mtp_lambda > 0 && c.num_nextn_predict_layers > 0)
      per_token += 6.0 * double(c.parameter_count(true) - c.parameter_count(false)) / 3.0;  // rough MTP share
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    std::printf("config %s: %.1fM params (%.1fM active), batch %lld x %lld, %s, %d threads\n", config.c_str(),
                double(c.parameter_count()) / 1e6, double(active) / 1e6, (long long)B, (long long)T, precision.c_str(),
                omp_get_max_threads());
    std::printf("training: %.0f tokens/s, %.2f GFLOP/s = %.1f%% of the measured sgemm peak %.1f GFLOP/s (MFU)\n", tps,
                per_token * tps / 1e9, 100.0 * per_token * tps / 1e9 / peak, peak);
    std::printf("memory: peak RSS %.0f MiB; AdamW state %.1f MB\n", double(u.ru_maxrss) / 1024.0,
                double(opt.state_bytes()) / 1e6);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
