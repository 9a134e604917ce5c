// SFT: which targets carry loss (checked against the rendered template by hand), packing
// layout, packed loss and gradients equal to the sums over the unpacked conversations, and a
// short run that learns.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../rl/rl_test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/train_graph.h"
#include "rl/distill.h"
#include "rl/rollout.h"
#include "train/sft.h"

using namespace whale;
using tokenizer::ChatFormat;
using tokenizer::ChatMessage;

namespace {

std::string decode_weighted(const tokenizer::Tokenizer& tok, const SftExample& ex, float w) {
  std::vector<int> ids;
  for (size_t i = 0; i < ex.tokens.size(); ++i)
    if (ex.weights[i] == w) ids.push_back(ex.tokens[i]);
  return tok.decode(ids);
}

}  // namespace

TEST(SftMask, OnlyAssistantTokensIncludingThinkAndEos) {
  const auto tok = rl_test::make_tokenizer();
  const std::vector<ChatMessage> msgs = {{"user", "What is 2 + 3?", {}},
                                         {"assistant", "<think>\n2+3=5\n</think>\n\n5", {}}};
  const SftExample ex = tokenize_conversation(msgs, tok, ChatFormat::DeepSeekV3);
  ASSERT_EQ(ex.tokens.size(), ex.weights.size());
  // The template renders "<BOS><｜User｜>What is 2 + 3?<｜Assistant｜><think>\n2+3=5\n</think>\n\n5<EOS>".
  EXPECT_EQ(decode_weighted(tok, ex, 0.0f), std::string(rl_test::kBos) + "<｜User｜>What is 2 + 3?<｜Assistant｜>");
  EXPECT_EQ(decode_weighted(tok, ex, 1.0f), std::string("<think>\n2+3=5\n</think>\n\n5") + rl_test::kEos);
  // Weighted tokens are one contiguous run ending with EOS, right after the assistant marker.
  const int assistant = tok.token_to_id("<｜Assistant｜>");
  size_t first = 0;
  while (ex.weights[first] == 0.0f) ++first;
  EXPECT_EQ(ex.tokens[first - 1], assistant);
  EXPECT_EQ(ex.tokens[first], tok.token_to_id("<think>"));
  EXPECT_EQ(ex.tokens.back(), tok.eos_id());
  for (size_t i = first; i < ex.tokens.size(); ++i) EXPECT_EQ(ex.weights[i], 1.0f);
  // The tokens are those of the whole rendering encoded at once.
  std::vector<int> whole = tok.encode(std::string(rl_test::kBos) + "<｜User｜>What is 2 + 3?<｜Assistant｜><think>\n2+3=5\n</think>\n\n5" +
                                      rl_test::kEos);
  EXPECT_EQ(std::vector<int>(ex.tokens.begin(), ex.tokens.end()), whole);
  // Eval and distillation prompt with exactly the unweighted prefix SFT trained after.
  const auto prompt = rl::encode_prompt(tok, "What is 2 + 3?", ChatFormat::DeepSeekV3);
  ASSERT_EQ(prompt.size(), first);
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), ex.tokens.begin()));
}

TEST(SftMask, MultiTurnWithSystem) {
  const auto tok = rl_test::make_tokenizer();
  const std::vector<ChatMessage> msgs = {{"system", "Be brief.", {}},
                                         {"user", "1+1?", {}},
                                         {"assistant", "2", {}},
                                         {"user", "2+2?", {}},
                                         {"assistant", "<think>x</think>4", {}}};
  const SftExample ex = tokenize_conversation(msgs, tok, ChatFormat::DeepSeekV3);
  EXPECT_EQ(decode_weighted(tok, ex, 1.0f), std::string("2") + rl_test::kEos + "<think>x</think>4" + rl_test::kEos);
  EXPECT_EQ(decode_weighted(tok, ex, 0.0f),
            std::string(rl_test::kBos) + "Be brief.<｜User｜>1+1?<｜Assistant｜><｜User｜>2+2?<｜Assistant｜>");
  // A system message after the first turn would change the text before it: refused.
  std::vector<ChatMessage> late = msgs;
  late.push_back({"system", "late", {}});
  EXPECT_THROW(tokenize_conversation(late, tok, ChatFormat::DeepSeekV3), Error);
}

TEST(SftData, ChatJsonlRoundTripAndErrors) {
  const auto tok = rl_test::make_tokenizer();
  const auto dir = std::filesystem::temp_directory_path() / "whale_sft_data_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "chat.jsonl").string();
  auto task = rl::make_task("arith:digits=2,ops=+");
  rl::write_chat_jsonl(path, rl::reference_conversations(*task, rl::Split::Train, 5, 0));
  const auto examples = load_chat_jsonl(path, tok, ChatFormat::DeepSeekV3);
  ASSERT_EQ(examples.size(), 5u);
  const auto p = task->problems(rl::Split::Train, 1, 0)[0];
  EXPECT_EQ(decode_weighted(tok, examples[0], 1.0f), p.reference_trace + rl_test::kEos);
  { std::ofstream(path) << R"({"messages": [{"role": "user", "content": "hi"}]})" << "\n"; }
  try {
    load_chat_jsonl(path, tok, ChatFormat::DeepSeekV3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":1"), std::string::npos) << e.what();
  }
  { std::ofstream(path) << "\n" << R"({"messages": [{"role": "robot", "content": "hi"}]})" << "\n"; }
  try {
    load_chat_jsonl(path, tok, ChatFormat::DeepSeekV3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("robot"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(SftPacking, RowLayoutByHand) {
  std::vector<SftExample> ex(3);
  ex[0] = {{10, 11, 12, 13}, {0, 0, 1, 1}};
  ex[1] = {{20, 21, 22}, {0, 1, 1}};
  ex[2] = {{30, 31, 32, 33, 34, 35}, {0, 0, 0, 1, 1, 1}};
  const auto rows = pack_rows(ex, {0, 1, 2}, 8);
  ASSERT_EQ(rows.size(), 2u);  // 4 + 3 fit in 8; 6 starts a new row
  EXPECT_EQ(rows[0], (std::vector<size_t>{0, 1}));
  const PackedBatch pb = make_packed_batch(ex, rows, 7, 99);
  EXPECT_EQ(pb.tokens, (std::vector<int32_t>{10, 11, 12, 13, 20, 21, 22, 99, 30, 31, 32, 33, 34, 35, 99, 99}));
  EXPECT_EQ(pb.segment_ids, (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, -1}));
  // Target of position t is token t+1: weighted when that token is an assistant token of the
  // same conversation; never across a boundary or into padding.
  EXPECT_EQ(pb.loss_mask, (std::vector<float>{0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0}));
}

TEST(SftPacking, LossAndGradientsEqualSumsOverUnpackedConversations) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 5;
  init.std = 0.05;
  init.norm_jitter = 0.1;
  auto m = init_model(c, init);
  Rng rng(3);
  std::vector<SftExample> ex;
  for (int len : {9, 13, 7, 11}) {
    SftExample e;
    for (int i = 0; i < len; ++i) {
      e.tokens.push_back(int32_t(rng.next() % uint64_t(c.vocab_size)));
      e.weights.push_back(i >= 3 ? float(1 + rng.next() % 2) : 0.0f);  // weights 1 or 2 after a "prompt"
    }
    ex.push_back(e);
  }
  const auto rows = pack_rows(ex, {0, 1, 2, 3}, 25);  // rows {9, 13} and {7, 11}, padded
  ASSERT_EQ(rows.size(), 2u);
  const int64_t T = 24;
  const PackedBatch pb = make_packed_batch(ex, rows, T, 0);
  double D = 0;
  for (float w : pb.loss_mask) D += w;
  TrainGraph graph(*m);
  Gradients packed(*m), separate(*m);
  const TrainBatch batch{pb.B, T, pb.tokens.data(), pb.loss_mask.data(), pb.segment_ids.data()};
  // grad_scale = the mask sum turns the mean into a sum, which is additive over conversations.
  const double packed_loss = graph.forward_backward(batch, {}, packed, float(D)).main_loss * D;
  double sum = 0;
  for (const auto& e : ex) {
    const int64_t t = int64_t(e.tokens.size()) - 1;
    std::vector<float> mask(e.weights.begin() + 1, e.weights.end());
    double d = 0;
    for (float w : mask) d += w;
    const TrainBatch one{1, t, e.tokens.data(), mask.data()};
    sum += graph.forward_backward(one, {}, separate, float(d)).main_loss * d;
  }
  EXPECT_NEAR(packed_loss, sum, 1e-4 * std::fabs(sum));
  double max_diff = 0, max_abs = 0;
  for (size_t s = 0; s < packed.storage.size(); ++s)
    for (size_t i = 0; i < packed.storage[s].size(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(packed.storage[s][i] - separate.storage[s][i])));
      max_abs = std::max(max_abs, double(std::fabs(separate.storage[s][i])));
    }
  EXPECT_GT(max_abs, 1e-3);
  EXPECT_LT(max_diff, 2e-4 * max_abs) << "max |packed - separate| " << max_diff << " of " << max_abs;
  // Without segment ids the conversations would see each other: the loss differs.
  const TrainBatch mixed{pb.B, T, pb.tokens.data(), pb.loss_mask.data()};
  EXPECT_GT(std::fabs(graph.forward(mixed, {}).main_loss * D - sum), 1e-3);
}

TEST(Sft, ShortRunLearnsAndCheckpoints) {
  const auto dir = std::filesystem::temp_directory_path() / "whale_sft_run_test";
  std::filesystem::remove_all(dir);
  rl_test::make_checkpoint((dir / "model").string(), 1);
  auto task = rl::make_task("arith:digits=1,ops=+");
  rl::write_chat_jsonl((dir / "chat.jsonl").string(), rl::reference_conversations(*task, rl::Split::Train, 8, 0));
  SftOptions o;
  o.model_dir = (dir / "model").string();
  o.data_path = (dir / "chat.jsonl").string();
  o.out_dir = (dir / "out").string();
  o.steps = 25;
  o.batch = 2;
  o.seq_len = 96;
  o.lr = 3e-3;
  const SftResult r = sft(o, nullptr);
  EXPECT_EQ(r.conversations, 8);
  EXPECT_EQ(r.truncated, 0);
  EXPECT_LT(r.final_loss, 0.6 * r.first_loss) << r.first_loss << " -> " << r.final_loss;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(r.final_checkpoint) / f)) << f;
  std::ifstream metrics(dir / "out" / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("step").get<int>(), ++lines);
  }
  EXPECT_EQ(lines, 25);
  std::filesystem::remove_all(dir);
}
