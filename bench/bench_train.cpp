// Training benchmark: tokens/s and model FLOP utilisation (achieved FLOP/s over the SGEMM peak
// measured here) of forward + backward + AdamW on random tokens, and peak memory.
//   bench_train --config bench/configs/train-10m.json [--batch 8 --seq-len 128 --steps 5 --precision fp32]
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "kernels/cpu_features.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "kernels/gemm_bf16.h"
#include "model/train_graph.h"
#include "train/optimizer.h"

using namespace whale;
using Clock = std::chrono::steady_clock;

// CPU seconds used by all of this process's threads: unlike the wall clock, it barely moves when
// other processes share the cores, so figures per CPU second compare across a busy machine.
static double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Best of a few 1024^3 SGEMMs on OpenBLAS's threads: the machine's own FP32 matmul ceiling,
// per wall second (all threads) and per CPU second (one core's worth).
struct Peak {
  double wall = 0, cpu = 0;
};
static Peak sgemm_peak() {
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  Peak best;
  for (int rep = 0; rep < 6; ++rep) {
    auto t = Clock::now();
    const double c0 = cpu_seconds();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double flop = 2.0 * n * n * n / 1e9;
    best.wall = std::max(best.wall, flop / std::chrono::duration<double>(Clock::now() - t).count());
    best.cpu = std::max(best.cpu, flop / (cpu_seconds() - c0));
  }
  return best;
}

// The same for oneDNN's BF16 GEMM (operands already BF16, FP32 output): the ceiling of the bf16
// compute mode. 2048^3 (the AMX kernel needs a large shape to reach its peak).
static Peak bf16_peak() {
  const int n = 2048;
  std::vector<uint16_t> a(size_t(n) * n, 0x3f00), b(size_t(n) * n, 0x3e80);  // 0.5, 0.25
  std::vector<float> c(size_t(n) * n);
  GemmBf16 gemm;
  Peak best;
  for (int rep = 0; rep < 6; ++rep) {
    auto t = Clock::now();
    const double c0 = cpu_seconds();
    gemm.gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double flop = 2.0 * n * n * n / 1e9;
    best.wall = std::max(best.wall, flop / std::chrono::duration<double>(Clock::now() - t).count());
    best.cpu = std::max(best.cpu, flop / (cpu_seconds() - c0));
  }
  return best;
}

// Weights one token multiplies through in a decoder layer slot: MLA projections, and the dense
// MLP or the router + shared experts + its top-k routed experts.
static double layer_matmul_weights(const ModelConfig& c, bool moe) {
  const double H = double(c.hidden_size), heads = double(c.num_attention_heads), qk = double(c.qk_head_dim());
  double w = c.q_lora_rank > 0 ? H * double(c.q_lora_rank) + double(c.q_lora_rank) * heads * qk : H * heads * qk;
  w += H * double(c.kv_lora_rank + c.qk_rope_head_dim);
  w += double(c.kv_lora_rank) * heads * double(c.qk_nope_head_dim + c.v_head_dim);
  w += heads * double(c.v_head_dim) * H;
  if (moe)
    w += H * double(c.n_routed_experts) +
         3.0 * H * double(c.moe_intermediate_size) * double(c.n_shared_experts + c.num_experts_per_tok);
  else
    w += 3.0 * H * double(c.intermediate_size);
  return w;
}

// Model FLOPs of one training step per input token: 6 per weight a token multiplies through
// (2 forward, 4 backward), plus attention's QK^T and PV, 6 * T * heads * (qk + v) per layer,
// counted over all T keys as PaLM's MFU does (appendix B). The embedding lookup is not a matmul.
// The MTP module runs on T - 1 of the T positions with its own layer, eh_proj and the shared head.
static double flops_per_token(const ModelConfig& c, int64_t T, bool mtp) {
  const double H = double(c.hidden_size), V = double(c.vocab_size);
  const double attn = double(c.num_attention_heads) * double(c.qk_head_dim() + c.v_head_dim);
  double weights = H * V;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) weights += layer_matmul_weights(c, c.is_moe_layer(l));
  double f = 6.0 * weights + 6.0 * double(T) * attn * double(c.num_hidden_layers);
  if (mtp && c.num_nextn_predict_layers > 0 && T >= 2) {
    const double mw = 2.0 * H * H + layer_matmul_weights(c, c.is_moe_layer(c.num_hidden_layers)) + H * V;
    f += double(T - 1) / double(T) * (6.0 * mw + 6.0 * double(T - 1) * attn);
  }
  return f;
}

int main(int argc, char** argv) {
  whale::reexec_with_startup_env(argv);  // OpenBLAS's kernels, OpenMP's wait (cpu_features.h)
  CLI::App app{"whale training benchmark"};
  std::string config, precision = "fp32";
  int64_t B = 8, T = 128, steps = 5;
  double mtp_lambda = 0.3;
  app.add_option("--config", config, "Model config.json")->required();
  app.add_option("--batch", B)->capture_default_str();
  app.add_option("--seq-len", T)->capture_default_str();
  app.add_option("--steps", steps, "Timed steps (after one warm-up step)")->capture_default_str();
  app.add_option("--precision", precision, "fp32, bf16 (oneDNN BF16 GEMM) or fp8 (simulated)")->capture_default_str();
  app.add_option("--mtp-lambda", mtp_lambda)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    // MFU against the ceiling of the mode's GEMM: SGEMM for fp32 (and the simulated fp8), the
    // BF16 GEMM for bf16.
    const bool bf16 = precision == "bf16";
    const Peak peak = bf16 ? bf16_peak() : sgemm_peak();
    const char* peak_name = bf16 ? "bf16 gemm" : "sgemm";
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
    double seconds = 0, cpu = 0, first_loss = 0, last_loss = 0;
    for (int64_t s = 0; s <= steps; ++s) {
      for (auto& t : tokens) t = int32_t(rng.next() % uint64_t(c.vocab_size));
      auto t0 = Clock::now();
      const double c0 = cpu_seconds();
      grads.zero();
      TrainBatch batch{B, T, tokens.data(), nullptr};
      const double loss = graph.forward_backward(batch, lo, grads).loss;
      if (s == 0) first_loss = loss;
      last_loss = loss;
      opt.clip_and_step(1.0, 1e-3);
      if (s > 0) {
        seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        cpu += cpu_seconds() - c0;
      }
    }
    const double tps = double(B * T * steps) / seconds;
    const double per_token = flops_per_token(c, T, mtp_lambda > 0);
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    size_t grad_bytes = 0;
    for (const auto& s : grads.storage) grad_bytes += s.size() * sizeof(float);
    std::printf("config %s: %.1fM params (%.1fM active), batch %lld x %lld, %s, %d threads, loss %.3f -> %.3f\n",
                config.c_str(), double(c.parameter_count()) / 1e6, double(c.active_parameter_count()) / 1e6,
                (long long)B, (long long)T, precision.c_str(), omp_get_max_threads(), first_loss, last_loss);
    if (bf16) std::printf("bf16 GEMM kernel: %s\n", GemmBf16().kernel().c_str());
    std::printf("model FLOPs per token %.1f M (6 x matmul weights + attention over T keys, MTP included)\n",
                per_token / 1e6);
    std::printf("training: %.0f tokens/s, %.2f GFLOP/s = %.1f%% of the measured %s peak %.1f GFLOP/s (MFU)\n", tps,
                per_token * tps / 1e9, 100.0 * per_token * tps / 1e9 / peak.wall, peak_name, peak.wall);
    const double tpc = double(B * T * steps) / cpu;
    std::printf("per CPU second: %.1f tokens, %.2f GFLOP = %.1f%% of %s's %.1f GFLOP per CPU second (MFU)\n", tpc,
                per_token * tpc / 1e9, 100.0 * per_token * tpc / 1e9 / peak.cpu, peak_name, peak.cpu);
    std::printf("memory: peak RSS %.0f MiB; weights %.1f MB, gradients %.1f MB, AdamW state %.1f MB, "
                "saved activations %.1f MB\n",
                double(u.ru_maxrss) / 1024.0, double(c.parameter_count()) * 4 / 1e6, double(grad_bytes) / 1e6,
                double(opt.state_bytes()) / 1e6, double(graph.activation_bytes()) / 1e6);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
