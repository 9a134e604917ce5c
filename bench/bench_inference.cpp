// Inference benchmark: prefill and decode tokens/s, peak resident memory, KV-cache bytes per
// token, and decode speed as a fraction of the memory-bandwidth limit. Prints the machine's own
// ceilings (read bandwidth, SGEMM GFLOP/s) first, measured here.
//   bench_inference --model DIR|FILE.gguf [--prompt 64,512] [--decode 32] [--batch 1] [--speculative]
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/error.h"
#include "core/phase_timer.h"
#include "infer/generate.h"
#include "infer/speculative.h"
#include "kernels/cpu_features.h"
#include "kernels/qmatmul.h"
#include "kernels/qmatmul_simd.h"
#include "io/checkpoint.h"

#include "bench_util.h"

using namespace whale;
using bench::Clock;
using bench::read_bandwidth_gbs;
using bench::seconds_since;

static double sgemm_gflops() {
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    auto t = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / seconds_since(t) / 1e9);
  }
  return best;
}

// Resident memory by kind now (MiB): anonymous (owned buffers, caches, scratch) and
// file-backed (the mapped weights' pages in the page cache, shared with it).
static void rss_by_kind(double* anon, double* file) {
  *anon = *file = 0;
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return;
  char line[256];
  long kb;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "RssAnon: %ld kB", &kb) == 1) *anon = double(kb) / 1024.0;
    if (std::sscanf(line, "RssFile: %ld kB", &kb) == 1) *file = double(kb) / 1024.0;
  }
  std::fclose(f);
}

static double peak_rss_mib() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

// Bytes of weights one decoded token reads: every dense projection, the router, the shared
// experts and the top-k routed experts of each MoE layer, and the LM head (not the MTP layer).
static double active_weight_bytes(const Model& m, const Transformer& tf) {
  const ModelConfig& c = m.config;
  auto bytes = [&](const Tensor& t) { return tf.weight_bytes(t); };
  double total = bytes(m.weights.lm_head) + double(c.hidden_size) * (m.weights.embed_tokens.dtype == DType::BF16 ? 2 : 4);
  for (const LayerWeights& l : m.weights.layers) {
    const AttentionWeights& a = l.attn;
    for (const Tensor* t : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa, &a.kv_b_proj, &a.o_proj})
      total += bytes(*t);
    if (l.is_moe) {
      total += bytes(l.moe.gate);
      const MlpWeights& e = l.moe.experts[0];
      total += double(c.num_experts_per_tok) * (bytes(e.gate_proj) + bytes(e.up_proj) + bytes(e.down_proj));
      total += bytes(l.moe.shared.gate_proj) + bytes(l.moe.shared.up_proj) + bytes(l.moe.shared.down_proj);
    } else {
      total += bytes(l.mlp.gate_proj) + bytes(l.mlp.up_proj) + bytes(l.mlp.down_proj);
    }
  }
  return total;
}

// Prefill of one prompt of n tokens (Generator with max_tokens 1): seconds.
static double prefill_seconds(Generator& gen, const std::vector<int32_t>& prompt) {
  GenerateOptions o;
  o.max_tokens = 1;
  o.stop_at_eos = false;
  GenerateStats stats;
  gen.generate({prompt}, o, {}, &stats);
  return stats.prefill_seconds;
}

static double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Wall and process-CPU seconds per decode step of one greedy generation (the prompt's prefill
// and first token excluded): the CPU figure is what a loaded machine distorts least.
static std::vector<int32_t> decode_step_seconds(Generator& gen, const std::vector<int32_t>& prompt, int64_t tokens,
                                                double* wall, double* cpu) {
  GenerateOptions o;
  o.max_tokens = tokens;
  o.stop_at_eos = false;
  int64_t seen = 0;
  Clock::time_point w0;
  double c0 = 0, c1 = 0;
  Clock::time_point w1;
  const auto out = gen.generate({prompt}, o, [&](int64_t, int32_t) {
    if (++seen == 1) {
      w0 = Clock::now();
      c0 = cpu_seconds();
    }
    w1 = Clock::now();
    c1 = cpu_seconds();
    return true;
  });
  const double steps = double(std::max<int64_t>(seen - 1, 1));
  *wall = std::chrono::duration<double>(w1 - w0).count() / steps;
  *cpu = (c1 - c0) / steps;
  return out[0];
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int main(int argc, char** argv) {
  whale::reexec_with_startup_env(argv);  // OpenBLAS's kernels, OpenMP's wait (cpu_features.h)
  CLI::App app{"whale inference benchmark"};
  std::string dir;
  int64_t decode = 32, batch = 1;
  std::vector<int64_t> prompts{64, 512};
  bool speculative = false;
  std::string attn = "auto";
  app.add_option("--model", dir, "Checkpoint directory or GGUF file (loaded memory-mapped)")->required();
  app.add_option("--prompt", prompts, "Prompt lengths to time prefill at (decode uses the first)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--decode", decode, "Tokens to decode")->capture_default_str();
  app.add_option("--batch", batch, "Sequences decoded together")->capture_default_str();
  app.add_flag("--speculative", speculative, "Also decode with MTP speculative decoding (greedy) and compare");
  int64_t roofline_rounds = 0;
  app.add_option("--roofline-rounds", roofline_rounds, "Then alternate N rounds of --decode steps with a read-bandwidth "
                 "probe (best of 3 passes over 1 GiB), and report each round's decode as a fraction of the bandwidth "
                 "measured beside it (the fairest roofline figure on a machine whose bandwidth drifts)");
  bool show_phases = false;
  app.add_flag("--phases", show_phases, "Time the decode by phase (attention projections, attention core, o_proj, "
               "router, MoE gate/up and down, LM head): ms per step, weight MB read, GB/s");
  bool no_fused_moe = false;
  app.add_flag("--no-fused-moe", no_fused_moe, "Run quantised MoE experts one projection at a time (A/B of the fused path)");
  std::string quantize;
  app.add_option("--quantize", quantize, "Requantise the projections at load (q8_0, q4_0, q4_k, q6_k)");
  std::string absorb;
  app.add_option("--absorb", absorb, "Absorbed MLA products on a quantised split k_b/v_b: int8 or f32 "
                                     "(default: WHALE_ABSORB, else int8)")
      ->check(CLI::IsMember({"int8", "f32"}));
  std::vector<int64_t> prefetch_kb;
  int64_t ab_rounds = 0, ab_prefetch = 0, ab_split = 0, ab_single = 0, spec_rounds = 0;
  app.add_option("--ab-qmatmul", ab_single, "Then alternate qmatmul's one-row products by 16-row tiles and as one "
                 "qmatvec_batch job this many rounds of --decode steps each in this process");
  app.add_option("--ab-split", ab_split, "Then alternate qmatvec_batch's static and dynamic work split this many rounds "
                 "of --decode steps each in this process");
  app.add_option("--ab-prefetch", ab_prefetch, "Then alternate the decode kernel's linear weight prefetch distances "
                 "(--prefetch-kb; default off and the current setting) this many rounds of --decode steps each in "
                 "this process; print median wall and CPU ms per step");
  app.add_option("--prefetch-kb", prefetch_kb, "Prefetch distances in KiB that --ab-prefetch alternates (e.g. 0,48,96)")
      ->delimiter(',');
  app.add_option("--spec-rounds", spec_rounds, "Then alternate N rounds of --decode plain steps and MTP speculative "
                 "passes (a model with an MTP module) and report the median of each round's pass / step time: what a "
                 "verify pass costs, whatever the acceptance")->capture_default_str();
  app.add_option("--ab-absorb", ab_rounds, "Then alternate f32 and int8 absorption this many rounds of --decode "
                                           "steps each in this process; print median wall and CPU ms per step");
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // one line at a time when piped to a log
  try {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    std::printf("threads: %d, quantised kernel path: %s, OpenMP wait: %s\n", omp_get_max_threads(),
                kernel_path_name(kernel_path()),
                policy ? (std::string("OMP_WAIT_POLICY=") + policy).c_str()
                       : spin ? (std::string("GOMP_SPINCOUNT=") + spin).c_str() : "libgomp default");
    auto t_load = Clock::now();
    auto model = load_model(dir);
    const double load_s = seconds_since(t_load);
    const ModelConfig& c = model->config;
    std::printf("model: %s  %.1fM params (%.1fM active/token), loaded in %.2fs (mmap)\n", dir.c_str(),
                double(c.parameter_count()) / 1e6, double(c.active_parameter_count()) / 1e6, load_s);
    auto t_repack = Clock::now();
    Generator gen(*model);
    if (gen.transformer().repacked_bytes() > 0)
      std::printf("repacked %.1f MB of Q8_0 weights for the VNNI kernels in %.2fs (WHALE_REPACK=0: off)\n",
                  double(gen.transformer().repacked_bytes()) / 1e6, seconds_since(t_repack));
    else
      std::printf("weights read as mapped (not repacked)\n");
    if (no_fused_moe) gen.transformer().set_fused_moe(false);
    if (!absorb.empty()) gen.transformer().set_quantised_absorption(absorb == "int8");
    std::printf("absorption on a quantised split k_b/v_b: %s\n", gen.transformer().quantised_absorption() ? "int8" : "f32");
    if (!quantize.empty()) {
      auto tq = Clock::now();
      const size_t qbytes = gen.transformer().quantize_weights(qmatmul_type_from_name(quantize, "--quantize"));
      std::printf("quantised projections to %s: %.1f MB in %.1fs\n", quantize.c_str(), double(qbytes) / 1e6,
                  seconds_since(tq));
    }
    auto make_prompt = [&](int64_t n) {
      std::vector<int32_t> p(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) p[size_t(i)] = int32_t((i * 7919 + 13) % c.vocab_size);
      return p;
    };
    prefill_seconds(gen, make_prompt(8));  // warm-up: touch the mapped pages once
    const double peak = sgemm_gflops();
    for (int64_t n : prompts) {
      const double s = prefill_seconds(gen, make_prompt(n));
      const double tps = double(n) / s;
      std::printf("prefill %lld: %.3fs = %.1f tok/s (%.1f GFLOP/s of matmul work, %.1f%% of sgemm peak %.1f)\n",
                  (long long)n, s, tps, 2.0 * double(c.active_parameter_count()) * tps / 1e9,
                  100.0 * 2.0 * double(c.active_parameter_count()) * tps / 1e9 / peak, peak);
    }
    GenerateOptions o;
    o.max_tokens = decode;
    o.stop_at_eos = false;
    const std::vector<int32_t> p = make_prompt(prompts.empty() ? 64 : prompts[0]);
    GenerateStats stats;
    phases::enabled = show_phases;
    // The first token ends the prefill: the phases count from there, over the decode steps only.
    bool first = true;
    gen.generate(std::vector<std::vector<int32_t>>(size_t(batch), p), o, [&](int64_t, int32_t) {
      if (first) phases::reset();
      first = false;
      return true;
    }, &stats);
    phases::enabled = false;
    if (show_phases) {
      const phases::Totals all = phases::totals();
      const double steps = double(std::max<int64_t>(stats.decode_tokens, 1)) / double(batch);
      double total_s = 0;
      for (int i = 0; i < phases::kCount; ++i) total_s += all.seconds[i];
      std::printf("decode phases (per step, %lld steps):\n", (long long)stats.decode_tokens);
      for (int i = 0; i < phases::kCount; ++i) {
        const double s = all.seconds[i] / steps, b = all.bytes[i] / steps;
        if (s <= 0 && b <= 0) continue;
        std::printf("  %-12s %7.2f ms %5.1f%%  %7.1f MB  %5.1f GB/s\n", phases::name(phases::Phase(i)), 1e3 * s,
                    100.0 * s * steps / total_s, b / 1e6, s > 0 ? b / s / 1e9 : 0.0);
      }
      std::printf("  %-12s %7.2f ms (step wall %.2f ms)\n", "timed total", 1e3 * total_s / steps,
                  1e3 * stats.decode_seconds / steps);
    }
    const double rss = peak_rss_mib();
    double rss_anon = 0, rss_file = 0;
    rss_by_kind(&rss_anon, &rss_file);
    const double bw = read_bandwidth_gbs();  // measured now, under the same load as the decode
    std::printf("machine: read bandwidth %.1f GB/s (measured after decoding, same contention)\n", bw);
    const double weight_bytes = active_weight_bytes(*model, gen.transformer());
    const double decode_tps = stats.decode_tokens_per_second();
    // A decode step reads the active weights once for the whole batch (upper bound: the union
    // of experts may be larger than top-k for batch > 1).
    const double steps_per_s = decode_tps / double(batch);
    const double bound_steps = bw * 1e9 / weight_bytes;
    std::printf("decode:  %lld tokens (batch %lld, context %zu) = %.2f tok/s; %.1f MB of weights per step -> "
                "roofline %.2f steps/s; achieved %.1f%% of it (%.1f GB/s of weights)\n",
                (long long)stats.decode_tokens, (long long)batch, p.size(), decode_tps, weight_bytes / 1e6,
                bound_steps, 100.0 * steps_per_s / bound_steps, steps_per_s * weight_bytes / 1e9);
    if (speculative && c.num_nextn_predict_layers > 0) {
      SpeculativeGenerator spec(*model);
      if (no_fused_moe) spec.transformer().set_fused_moe(false);
      if (!quantize.empty()) spec.transformer().quantize_weights(qmatmul_type_from_name(quantize, "--quantize"));
      SpeculativeStats ss;
      spec.generate(std::vector<std::vector<int32_t>>(size_t(batch), p), o, {}, &ss);
      std::printf("speculative (MTP draft, greedy): %.2f tok/s = %.2fx plain decode; %lld of %lld drafts accepted "
                  "(%.1f%%)\n",
                  ss.decode_tokens_per_second(), ss.decode_tokens_per_second() / decode_tps, (long long)ss.accepted,
                  (long long)ss.drafted, 100.0 * ss.acceptance_rate());
      // A verify pass (2 rows + the MTP module) yields 1 + (accepted draft) tokens; its cost
      // relative to a plain step says what speedup a given acceptance rate buys.
      const double pass_s = ss.decode_seconds / double(std::max<int64_t>(ss.steps, 1));
      const double step_s = stats.decode_seconds / (double(std::max<int64_t>(stats.decode_tokens, 1)) / double(batch));
      std::printf("speculative: one verify pass costs %.2fx a plain decode step; at 85%% / 90%% acceptance "
                  "(DeepSeek-V3's report) that is %.2fx / %.2fx plain decode\n",
                  pass_s / step_s, 1.85 * step_s / pass_s, 1.90 * step_s / pass_s);
    }
    if (spec_rounds > 0 && c.num_nextn_predict_layers > 0) {
      SpeculativeGenerator spec(*model);
      if (no_fused_moe) spec.transformer().set_fused_moe(false);
      std::vector<double> ratio;
      bool same = true;
      for (int64_t r = 0; r < spec_rounds; ++r) {
        double step = 0, cs = 0;
        const auto plain = decode_step_seconds(gen, p, decode, &step, &cs);
        GenerateOptions so;
        so.max_tokens = decode;
        so.stop_at_eos = false;
        SpeculativeStats ss;
        const auto drafted = spec.generate({p}, so, {}, &ss);
        same = same && drafted[0] == plain;
        const double pass = ss.decode_seconds / double(std::max<int64_t>(ss.steps, 1));
        ratio.push_back(pass / step);
        std::printf("spec round %lld: plain step %.1f ms, speculative pass %.1f ms (%.2fx), %lld of %lld drafts accepted\n",
                    (long long)r, 1e3 * step, 1e3 * pass, pass / step, (long long)ss.accepted, (long long)ss.drafted);
      }
      const auto [r0, r1] = std::minmax_element(ratio.begin(), ratio.end());
      const double m = median(ratio);
      std::printf("speculative pass / plain step (median of %lld rounds): %.2fx (range %.2f-%.2f); greedy tokens %s; at "
                  "85%% / 90%% acceptance that is %.2fx / %.2fx plain decode\n",
                  (long long)spec_rounds, m, *r0, *r1, same ? "identical" : "DIFFER", 1.85 / m, 1.90 / m);
    }
    if (ab_rounds > 0) {
      // Same binary, same process, interleaved: the fairest A/B on a shared machine. F32
      // absorption, int8 absorption in its own regions, int8 fused into the attention's items.
      Generator f32(*model), int8(*model), fused(*model);
      Generator* gens[3] = {&f32, &int8, &fused};
      const char* names[3] = {"f32       ", "int8      ", "int8 fused"};
      for (int k = 0; k < 3; ++k) {
        gens[k]->transformer().set_quantised_absorption(k > 0);
        gens[k]->transformer().set_fused_absorption(k == 2);
        if (no_fused_moe) gens[k]->transformer().set_fused_moe(false);
        if (!quantize.empty()) gens[k]->transformer().quantize_weights(qmatmul_type_from_name(quantize, "--quantize"));
      }
      std::vector<double> wall[3], cpu[3];
      std::vector<int32_t> tokens[3];
      for (int64_t r = 0; r < ab_rounds; ++r)
        for (int k = 0; k < 3; ++k) {
          double w = 0, cs = 0;
          tokens[k] = decode_step_seconds(*gens[k], p, decode, &w, &cs);
          wall[k].push_back(w);
          cpu[k].push_back(cs);
          std::printf("ab round %lld %s: %.1f ms wall, %.1f ms CPU per step\n", (long long)r, names[k], 1e3 * w, 1e3 * cs);
        }
      for (int k = 0; k < 3; ++k)
        std::printf("ab absorption %s (median of %lld rounds of %lld steps): %.1f ms wall, %.1f ms CPU per step; CPU "
                    "%.3f of f32's\n",
                    names[k], (long long)ab_rounds, (long long)decode, 1e3 * median(wall[k]), 1e3 * median(cpu[k]),
                    median(cpu[k]) / median(cpu[0]));
      int64_t same = 0;
      while (same < int64_t(std::min(tokens[0].size(), tokens[1].size())) && tokens[0][size_t(same)] == tokens[1][size_t(same)])
        ++same;
      std::printf("ab absorption: greedy tokens int8 vs f32 %s (first %lld of %zu agree); fused vs unfused %s\n",
                  tokens[0] == tokens[1] ? "identical" : "differ", (long long)same, tokens[0].size(),
                  tokens[1] == tokens[2] ? "identical" : "DIFFER");
    }
    if (roofline_rounds > 0) {
      const size_t n = (size_t(1) << 30) / sizeof(uint64_t);
      std::vector<uint64_t> buf(n, 1);
      std::vector<double> fraction, rates, probes;
      for (int64_t r = 0; r < roofline_rounds; ++r) {
        double w = 0, cs = 0;
        decode_step_seconds(gen, p, decode, &w, &cs);
        double bw = 0;
        for (int rep = 0; rep < 3; ++rep) bw = std::max(bw, bench::read_bandwidth_once(buf.data(), n));
        const double rate = weight_bytes / w / 1e9;
        rates.push_back(1.0 / w);
        probes.push_back(bw);
        fraction.push_back(rate / bw);
        std::printf("roofline round %lld: %.2f tok/s = %.1f GB/s of weights; probe %.1f GB/s; %.1f%%\n", (long long)r,
                    1.0 / w, rate, bw, 100.0 * rate / bw);
      }
      const auto [f0, f1] = std::minmax_element(fraction.begin(), fraction.end());
      const auto [t0, t1] = std::minmax_element(rates.begin(), rates.end());
      const auto [b0, b1] = std::minmax_element(probes.begin(), probes.end());
      std::printf("roofline (%lld rounds of %lld steps): median %.1f%% of the bandwidth beside it (range %.1f-%.1f%%); "
                  "decode median %.2f tok/s (%.2f-%.2f); probe median %.1f GB/s (%.1f-%.1f)\n",
                  (long long)roofline_rounds, (long long)decode, 100.0 * median(fraction), 100.0 * *f0, 100.0 * *f1,
                  median(rates), *t0, *t1, median(probes), *b0, *b1);
    }
    // Same generator, same process, interleaved: only one knob changes between the two arms.
    // Same-process A/B(/C...): each round runs every arm back to back; the median of each arm's
    // per-round ratio to arm 1 cancels slow drifts of the machine.
    auto ab = [&](const char* knob, int64_t rounds, const std::vector<std::string>& names,
                  const std::function<void(int)>& set) {
      const int arms = int(names.size());
      std::vector<std::vector<double>> wall(static_cast<size_t>(arms)), cpu(static_cast<size_t>(arms));
      std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(arms));
      for (int64_t r = 0; r < rounds; ++r)
        for (int k = 0; k < arms; ++k) {
          set(k);
          double w = 0, cs = 0;
          tokens[size_t(k)] = decode_step_seconds(gen, p, decode, &w, &cs);
          wall[size_t(k)].push_back(w);
          cpu[size_t(k)].push_back(cs);
          std::printf("ab %s round %lld %s: %.1f ms wall per step\n", knob, (long long)r, names[size_t(k)].c_str(),
                      1e3 * w);
        }
      set(arms - 1);
      for (int k = 0; k < arms; ++k)
        std::printf("ab %s %s (median of %lld rounds of %lld steps): %.1f ms wall, %.1f ms CPU per step; %.2f tok/s\n",
                    knob, names[size_t(k)].c_str(), (long long)rounds, (long long)decode,
                    1e3 * median(wall[size_t(k)]), 1e3 * median(cpu[size_t(k)]), 1.0 / median(wall[size_t(k)]));
      for (int k = 1; k < arms; ++k) {
        std::vector<double> ratio;
        for (size_t r = 0; r < wall[0].size(); ++r) ratio.push_back(wall[size_t(k)][r] / wall[0][r]);
        const auto [r0, r1] = std::minmax_element(ratio.begin(), ratio.end());
        std::printf("ab %s: greedy tokens %s; step wall, %s / %s per round: median %.3f (range %.3f-%.3f)\n", knob,
                    tokens[0] == tokens[size_t(k)] ? "identical" : "DIFFER", names[size_t(k)].c_str(), names[0].c_str(),
                    median(ratio), *r0, *r1);
      }
    };
    if (ab_prefetch > 0) {
      // Distances in KiB: --prefetch-kb, else off against 48 (both kernels; defaults in qmatmul_simd.h).
      if (prefetch_kb.empty()) prefetch_kb = {0, 48};
      std::vector<std::string> names;
      for (int64_t kb : prefetch_kb) names.push_back(std::to_string(kb) + " KiB");
      ab("prefetch", ab_prefetch, names,
         [&](int k) { simd::set_qgemm_prefetch_bytes(size_t(prefetch_kb[size_t(k)]) << 10); });
    }
    if (ab_split > 0) {
      const QmatvecSplit dynamic = qmatvec_split();
      const std::string dyn_name = "static " + std::to_string(dynamic.static_percent) + "%, chunks of " +
                                   std::to_string(dynamic.chunk_units);
      const std::vector<std::string> names = {"static", dyn_name};
      ab("work split", ab_split, names, [&](int k) { set_qmatvec_split(k ? dynamic : QmatvecSplit{100, 1}); });
    }
    if (ab_single > 0) {
      const std::vector<std::string> names = {"qmatmul tiles   ", "qmatmul as batch"};
      ab("qmatmul M=1", ab_single, names, [&](int k) { set_qmatmul_batch_rows(k == 1 ? 2 : 0); });
    }
    std::printf("kv cache: %lld bytes/token (latent %lld + rope %lld floats x %lld layers)\n",
                (long long)KVCache::bytes_per_token(c), (long long)c.kv_lora_rank, (long long)c.qk_rope_head_dim,
                (long long)c.num_hidden_layers);
    std::printf("peak RSS: %.0f MiB (model mapped + caches + scratch, before the bandwidth probe); after decoding "
                "%.0f MiB anonymous (owned buffers, caches, scratch) + %.0f MiB of mapped file pages\n",
                rss, rss_anon, rss_file);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_inference: %s\n", e.what());
    return 1;
  }
  return 0;
}
