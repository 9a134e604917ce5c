// Simulated BF16 / FP8 compute (DeepSeek-V3's E4M3 recipe) against FP32 on one training step:
// each mode must perturb the gradient (the quantisers are applied), FP8 more than BF16 (E4M3
// keeps 4 significant bits, BF16 8), and keep its direction. And the FP8 experiment knob
// WHALE_FP8_FP32 (model/train_graph.h), which keeps parts of the recipe in FP32.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"

using namespace whale;

namespace {

struct StepResult {
  double loss = 0;
  std::vector<float> grad;  // every gradient buffer, concatenated
};

// fp32_parts: WHALE_FP8_FP32 for this step (null: unset). B sequences of T tokens.
StepResult step(const std::string& precision, const char* fp32_parts = nullptr, int64_t B = 2, int64_t T = 48) {
  if (fp32_parts) setenv("WHALE_FP8_FP32", fp32_parts, 1);
  else unsetenv("WHALE_FP8_FP32");
  // One random model for every step (a step reads the weights, it does not change them).
  static const std::unique_ptr<Model> model = [] {
    InitOptions init;
    init.seed = 5;
    return init_model(load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"), init);
  }();
  const ModelConfig& c = model->config;
  TrainGraph graph(*model);
  graph.set_precision(precision);
  Gradients grads(*model);
  Rng rng(7);
  std::vector<int32_t> tokens(size_t(B * (T + 1)));
  for (auto& t : tokens) t = int32_t(rng.next() % uint64_t(c.vocab_size));
  LossOptions lo;
  lo.mtp_lambda = 0.3;
  lo.balance_alpha = 1e-4;
  StepResult r;
  r.loss = graph.forward_backward(TrainBatch{B, T, tokens.data(), nullptr}, lo, grads).loss;
  unsetenv("WHALE_FP8_FP32");
  for (const auto& s : grads.storage) r.grad.insert(r.grad.end(), s.begin(), s.end());
  return r;
}

// |a - b| / |b| over the whole gradient vector, and the cosine of the angle between them.
std::pair<double, double> compare(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, nb = 0, na = 0, dot = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
    dot += double(a[i]) * b[i];
  }
  return {std::sqrt(d / nb), dot / std::sqrt(na * nb)};
}

}  // namespace

TEST(TrainPrecision, Bf16AndFp8PerturbTheGradientByTheirPrecision) {
  const StepResult fp32 = step("fp32"), bf16 = step("bf16"), fp8 = step("fp8");
  const auto [bf16_err, bf16_cos] = compare(bf16.grad, fp32.grad);
  const auto [fp8_err, fp8_cos] = compare(fp8.grad, fp32.grad);
  // Rounding an operand costs up to 2^-9 (BF16) or 2^-5 (E4M3 in its scaled group) relative per
  // element; through the layers, and through the few tokens whose top-k experts change with the
  // perturbation, the whole gradient moves by more: measured 1.5e-2 (BF16) and 0.14 (FP8), cosines
  // 0.99989 and 0.991. The bounds sit about 3x out, far below the order-1 error of a wrong scale.
  EXPECT_GT(bf16_err, 1e-4) << "BF16 rounding was not applied";
  EXPECT_LT(bf16_err, 5e-2);
  EXPECT_GT(fp8_err, 4 * bf16_err) << "E4M3 has 4 fewer mantissa bits than BF16";
  EXPECT_LT(fp8_err, 0.4);
  EXPECT_GT(bf16_cos, 0.9995);
  EXPECT_GT(fp8_cos, 0.95);
  EXPECT_NEAR(bf16.loss, fp32.loss, 1e-3 * fp32.loss);
  EXPECT_NEAR(fp8.loss, fp32.loss, 1e-2 * fp32.loss);
  EXPECT_NE(fp8.loss, fp32.loss);
  std::printf("relative gradient error: bf16 %.2e (cos %.6f), fp8 %.2e (cos %.6f); loss fp32 %.6f bf16 %.6f fp8 %.6f\n",
              bf16_err, bf16_cos, fp8_err, fp8_cos, fp32.loss, bf16.loss, fp8.loss);
}

// Each part of the knob must reach the GEMMs it names (keeping it in FP32 moves the gradient away
// from full FP8 without reaching FP32), all roles or all modules together must give FP32's
// gradient, and a wrong name is an Error that names it.
TEST(TrainPrecision, Fp8PartsKeptInFp32ReachTheirGemms) {
  // 13 steps: one sequence of 24 tokens each keeps the test short (under the sanitizers too).
  auto grad = [](const char* precision, const char* parts = nullptr) { return step(precision, parts, 1, 24).grad; };
  const std::vector<float> fp32 = grad("fp32"), fp8 = grad("fp8");
  ASSERT_GT(compare(fp8, fp32).first, 1e-2);
  EXPECT_LT(compare(grad("fp8", "x,w,dy,wgrad"), fp32).first, 1e-5);
  EXPECT_LT(compare(grad("fp8", "attn,experts,mlp"), fp32).first, 1e-5);
  EXPECT_EQ(compare(grad("fp8", ""), fp8).first, 0.0);  // an empty list is plain FP8
  for (const char* part : {"x", "w", "dy", "wgrad", "attn", "experts", "mlp"}) {
    const std::vector<float> g = grad("fp8", part);
    EXPECT_GT(compare(g, fp8).first, 1e-4) << part << " changed nothing";
    EXPECT_GT(compare(g, fp32).first, 1e-4) << part << " turned off all of FP8";
  }
}

TEST(TrainPrecision, Fp8PartsListIsParsedAndAWrongNameIsAnError) {
  EXPECT_EQ(parse_fp8_fp32_parts(""), 0u);
  EXPECT_EQ(parse_fp8_fp32_parts("wgrad"), unsigned(kFp8Wgrad));
  EXPECT_EQ(parse_fp8_fp32_parts("x,experts"), unsigned(kFp8Activations | kFp8Experts));
  try {
    parse_fp8_fp32_parts("x,weights");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'weights'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("WHALE_FP8_FP32"), std::string::npos) << e.what();
  }
}
