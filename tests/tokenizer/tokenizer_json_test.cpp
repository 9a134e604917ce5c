// tokenizer.json parsing errors, Split behaviors and the UTF-8 / regex helpers.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace whale::tokenizer {
namespace {

// A complete byte-level tokenizer.json: 256 byte tokens, merges for "ab" and "abc".
std::string tiny_json(const std::string& merges = R"(["a b", "ab c"])",
                      const std::string& pre = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})",
                      const std::string& extra_vocab = R"(, "ab": 256, "abc": 257)") {
  std::string vocab;
  const auto& alphabet = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string token = alphabet[size_t(b)];
    if (token == "\"" || token == "\\") token = "\\" + token;
    vocab += (b ? ", \"" : "\"") + token + "\": " + std::to_string(b);
  }
  return R"({"added_tokens": [{"id": 258, "content": "<eos>", "special": true}], "normalizer": null, "pre_tokenizer": )" +
         pre + R"(, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {)" + vocab + extra_vocab +
         R"(}, "merges": )" + merges + "}}";
}

std::string error_of(const std::string& json) {
  try {
    Tokenizer::from_json(json, "t.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(TokenizerJson, LoadsBothMergeFormats) {
  Tokenizer a = Tokenizer::from_json(tiny_json(), "t.json");
  Tokenizer b = Tokenizer::from_json(tiny_json(R"([["a", "b"], ["ab", "c"]])"), "t.json");
  EXPECT_EQ(a.encode("abc abd<eos>"), (std::vector<int>{257, a.token_to_id("Ġ"), 256, 'd', 258}));
  EXPECT_EQ(a.encode("abc abd<eos>"), b.encode("abc abd<eos>"));
  EXPECT_EQ(a.decode(a.encode("abc abd<eos>")), "abc abd<eos>");
  EXPECT_EQ(a.vocab_size(), 259);
}

TEST(TokenizerJson, ErrorsNameTheProblem) {
  EXPECT_NE(error_of("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("{}").find("missing field \"model\""), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"(["a b c"])")).find("merges[0]"), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"(["a zz"])")).find("\"zz\" is not in the vocab"), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"(["a b"])", R"({"type": "ByteLevel"})", "")).find("merge result \"ab\""), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"([42])")).find("expected \"a b\" or"), std::string::npos);
  EXPECT_NE(error_of(tiny_json("[]", R"({"type": "Whitespace"})")).find("unsupported pre-tokenizer \"Whitespace\""),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json("[]", R"({"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"})"))
                .find("invalid regex"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json("[]", R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"})"))
                .find("unknown Split behavior \"Sideways\""),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json("[]", "null")).find("only byte-level BPE"), std::string::npos);
  std::string bad_vocab = tiny_json("[]", R"({"type": "ByteLevel"})", R"(, "x": "seven")");
  EXPECT_NE(error_of(bad_vocab).find("vocab[\"x\"]: expected an integer id"), std::string::npos);
}

std::vector<std::string> split_with(SplitBehavior behavior, bool invert, const std::string& text) {
  PreTokenizer pre;
  pre.add_string_split("-", behavior, invert, "test");
  PreTokenizeScratch scratch;
  std::vector<Span> pieces;
  pre.split(text, pieces, scratch);
  std::vector<std::string> out;
  for (Span p : pieces) out.push_back(text.substr(p.begin, p.end - p.begin));
  return out;
}

TEST(TokenizerSplit, BehaviorsFollowHuggingFace) {
  // The examples of the Hugging Face tokenizers documentation (SplitDelimiterBehavior).
  const std::string t = "the-final--countdown";
  using V = std::vector<std::string>;
  EXPECT_EQ(split_with(SplitBehavior::Removed, false, t), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::Isolated, false, t), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::MergedWithPrevious, false, t), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::MergedWithNext, false, t), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::Contiguous, false, t), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::Removed, true, t), (V{"-", "-", "-"}));
}

TEST(TokenizerSplit, RegexUsesUnicodePropertiesAndLookahead) {
  PreTokenizer pre;
  pre.add_regex_split("\\p{N}{1,3}", SplitBehavior::Isolated, false, "test");
  pre.add_regex_split("\\s+(?!\\S)|\\s+|\\p{L}+|[^\\s\\p{L}]+", SplitBehavior::Isolated, false, "test");
  PreTokenizeScratch scratch;
  std::vector<Span> pieces;
  const std::string text = "ab   cd 1234567 é\u3000x";
  pre.split(text, pieces, scratch);
  std::vector<std::string> got;
  for (Span p : pieces) got.push_back(text.substr(p.begin, p.end - p.begin));
  EXPECT_EQ(got, (std::vector<std::string>{"ab", "  ", " ", "cd", " ", "123", "456", "7", " ", "é", "\u3000", "x"}));
}

TEST(TokenizerRegex, JsWhitespaceAndContractions) {
  // JS \s includes U+FEFF but not U+0085; PCRE2's UCP \s is the other way round.
  Regex space(js_compatible_pattern("^\\s$"), "test");
  MatchState state;
  size_t b, e;
  EXPECT_TRUE(space.find("\ufeff", 0, b, e, state));
  EXPECT_FALSE(space.find("\u0085", 0, b, e, state));
  EXPECT_TRUE(space.find("\u3000", 0, b, e, state));
  Regex contraction(js_compatible_pattern("^(?i:'s|'t|'re|'ve|'m|'ll|'d)$"), "test");
  EXPECT_TRUE(contraction.find("'S", 0, b, e, state));
  EXPECT_FALSE(contraction.find("'\u017f", 0, b, e, state));  // long s folds to s in PCRE2
  EXPECT_EQ(js_compatible_pattern("[^\\s\\p{L}]"), "[^\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                                   "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}\\p{L}]");
}

TEST(TokenizerUtf8, ReplacesMaximalSubparts) {
  EXPECT_EQ(sanitize_utf8("ok"), "ok");
  EXPECT_EQ(sanitize_utf8("\xf0\x9f\x98"), "\ufffd");                   // truncated 4-byte
  EXPECT_EQ(sanitize_utf8("\xc0\xaf"), "\ufffd\ufffd");                 // overlong lead
  EXPECT_EQ(sanitize_utf8("\xed\xa0\x80"), "\ufffd\ufffd\ufffd");       // surrogate
  EXPECT_EQ(sanitize_utf8("\xf4\x90\x80\x80"), "\ufffd\ufffd\ufffd\ufffd");  // past U+10FFFF
  EXPECT_EQ(sanitize_utf8("\xe4\xbd" "a\xe4\xbd\xa0"), "\ufffd" "a\u4f60");
  EXPECT_TRUE(is_valid_utf8("\U0001F600"));
  EXPECT_FALSE(is_valid_utf8("\xff"));
}

TEST(TokenizerByteLevel, MapIsReversible) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  std::string back;
  EXPECT_TRUE(byte_level_decode(byte_level_encode(all), back));
  EXPECT_EQ(back, all);
  EXPECT_EQ(byte_level_encode(" "), "Ġ");
  EXPECT_EQ(byte_level_encode("\n"), "Ċ");
}

}  // namespace
}  // namespace whale::tokenizer
