#include "io/gguf_tokenizer.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"

namespace whale {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// llama.cpp's token types (llama_token_type / gguf-py TokenType).
enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Pre-tokenizer regexes, in order, of llama.cpp's named BPE pre-tokenizers (llama-vocab.cpp),
// which are those of the models' tokenizer.json files: each is a Split with behavior
// Isolated, followed by ByteLevel without its own regex.
const std::vector<std::string>& deepseek_v3_regexes() {
  static const std::vector<std::string> r = {
      "\\p{N}{1,3}",
      "[一-龥\u3040-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
  return r;
}

const std::vector<std::string>& deepseek_llm_regexes() {
  static const std::vector<std::string> r = {
      "[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\U00010400-\U0001044f𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
      "\\s+$",
      "[一-龥ࠀ-一가-퟿]+",
      "\\p{N}+"};
  return r;
}

json pre_tokenizer_json(const std::string& pre, const std::string& where) {
  const std::vector<std::string>* regexes = nullptr;
  if (pre == "deepseek-v3") regexes = &deepseek_v3_regexes();
  else if (pre == "deepseek-llm") regexes = &deepseek_llm_regexes();
  else if (pre != "default" && pre != "gpt2")
    throw Error(where, "tokenizer.ggml.pre is '" + pre + "'; whale reads deepseek-v3, deepseek-llm, gpt2 or default");
  if (!regexes)  // GPT-2's own regex, inside ByteLevel
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json steps = json::array();
  for (const auto& r : *regexes)
    steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

// The llama.cpp name of a tokenizer.json pre-tokenizer, or "default" when it is none we know.
std::string pre_tokenizer_name(const json& pre) {
  if (!pre.is_object() || pre.value("type", "") != "Sequence" || !pre.contains("pretokenizers")) return "default";
  std::vector<std::string> regexes;
  for (const json& p : pre["pretokenizers"]) {
    if (p.value("type", "") == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
      regexes.push_back(p["pattern"]["Regex"].get<std::string>());
  }
  if (regexes == deepseek_v3_regexes()) return "deepseek-v3";
  if (regexes == deepseek_llm_regexes()) return "deepseek-llm";
  return "default";
}

}  // namespace

bool add_gguf_tokenizer(GgufWriter& w, const std::string& dir, const ModelConfig& config) {
  const fs::path path = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(path)) return false;
  const std::string text = read_text_file(path.string());
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(path.string(), std::string("not valid JSON: ") + e.what());
  }
  const std::string where = path.string();
  if (!root.contains("model") || !root["model"].contains("vocab") || !root["model"]["vocab"].is_object())
    throw Error(where, "expected model.vocab (a byte-level BPE tokenizer.json)");
  std::map<int64_t, std::pair<std::string, int>> by_id;  // id -> (token, type)
  for (auto it = root["model"]["vocab"].begin(); it != root["model"]["vocab"].end(); ++it)
    by_id[it.value().get<int64_t>()] = {it.key(), kNormal};
  if (root.contains("added_tokens") && root["added_tokens"].is_array())
    for (const json& t : root["added_tokens"])
      by_id[t.at("id").get<int64_t>()] = {t.at("content").get<std::string>(), t.value("special", false) ? kControl : kUserDefined};
  const int64_t max_id = by_id.empty() ? -1 : by_id.rbegin()->first;
  if (max_id >= config.vocab_size)
    throw Error(where, "has token id " + std::to_string(max_id) + " but the model's vocab_size is " + std::to_string(config.vocab_size));
  std::vector<std::string> tokens(size_t(config.vocab_size));
  std::vector<int64_t> types(size_t(config.vocab_size), kUnused);
  for (int64_t id = 0; id < config.vocab_size; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      tokens[size_t(id)] = "[PAD" + std::to_string(id) + "]";  // as llama.cpp's converter pads
    } else {
      tokens[size_t(id)] = it->second.first;
      types[size_t(id)] = it->second.second;
    }
  }
  std::vector<std::string> merges;
  if (root["model"].contains("merges"))
    for (const json& m : root["model"]["merges"])
      merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", pre_tokenizer_name(root.value("pre_tokenizer", json())));
  w.add_strings("tokenizer.ggml.tokens", std::move(tokens));
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_strings("tokenizer.ggml.merges", std::move(merges));
  w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(config.bos_token_id));
  w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(config.eos_token_id));
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    json tc;
    try {
      tc = json::parse(read_text_file(config_path.string()));
    } catch (const json::parse_error& e) {
      throw Error(config_path.string(), std::string("not valid JSON: ") + e.what());
    }
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean())
      w.add_bool("tokenizer.ggml.add_bos_token", tc["add_bos_token"].get<bool>());
    if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean())
      w.add_bool("tokenizer.ggml.add_eos_token", tc["add_eos_token"].get<bool>());
    if (tc.contains("chat_template") && tc["chat_template"].is_string())
      w.add_string("tokenizer.chat_template", tc["chat_template"].get<std::string>());
  }
  w.add_string("tokenizer.huggingface.json", text);
  return true;
}

void copy_gguf_tokenizer(GgufWriter& w, const GgufFile& from) {
  for (const auto& [key, value] : from.header().kv)
    if (key.rfind("tokenizer.", 0) == 0) w.add(key, value);
}

std::string gguf_tokenizer_json(const GgufFile& f) {
  const std::string where = f.path();
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw Error(where, "tokenizer.ggml.model is '" + model + "'; whale reads byte-level BPE ('gpt2') tokenizers only");
  const GgufValue& tokens = f.get("tokenizer.ggml.tokens");
  if (tokens.type != GgufType::ARRAY || tokens.elem != GgufType::STRING)
    throw Error(where, "tokenizer.ggml.tokens must be an array of strings");
  std::vector<int64_t> types(tokens.strings.size(), kNormal);
  if (f.has("tokenizer.ggml.token_type")) {
    const GgufValue& t = f.get("tokenizer.ggml.token_type");
    if (t.type != GgufType::ARRAY || t.ints.size() != tokens.strings.size())
      throw Error(where, "tokenizer.ggml.token_type must be an integer array with one entry per token (" +
                             std::to_string(tokens.strings.size()) + ")");
    types = t.ints;
  }
  json vocab = json::object(), added = json::array();
  for (size_t id = 0; id < tokens.strings.size(); ++id) {
    const std::string& s = tokens.strings[id];
    if (types[id] == kControl || types[id] == kUserDefined) {
      added.push_back({{"id", id}, {"content", s}, {"special", types[id] == kControl}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", types[id] != kControl}});
    } else if (types[id] != kUnused && !s.empty() && !vocab.contains(s)) {
      vocab[s] = id;
    }
  }
  json merges = json::array();
  if (f.has("tokenizer.ggml.merges")) {
    const GgufValue& m = f.get("tokenizer.ggml.merges");
    if (m.type != GgufType::ARRAY || m.elem != GgufType::STRING)
      throw Error(where, "tokenizer.ggml.merges must be an array of strings");
    for (const auto& s : m.strings) merges.push_back(s);
  }
  json root;
  root["version"] = "1.0";
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = pre_tokenizer_json(f.get_string("tokenizer.ggml.pre", "default"), where);
  root["post_processor"] = nullptr;
  root["decoder"] = {{"type", "ByteLevel"}};
  root["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  return root.dump();
}

std::unique_ptr<tokenizer::Tokenizer> gguf_tokenizer(const GgufFile& f) {
  if (!f.has("tokenizer.ggml.model")) return nullptr;
  tokenizer::TokenizerConfig config;
  config.add_bos_token = f.get_bool("tokenizer.ggml.add_bos_token", false);
  config.add_eos_token = f.get_bool("tokenizer.ggml.add_eos_token", false);
  config.chat_template = f.get_string("tokenizer.chat_template", "");
  const GgufValue& tokens = f.get("tokenizer.ggml.tokens");
  auto token_at = [&](const char* key) -> std::string {
    if (!f.has(key)) return "";
    const int64_t id = f.get_int(key);
    if (id < 0 || size_t(id) >= tokens.strings.size())
      throw Error(f.path(), std::string(key) + " = " + std::to_string(id) + " is not a token id (the file has " +
                                std::to_string(tokens.strings.size()) + " tokens)");
    return tokens.strings[size_t(id)];
  };
  config.bos_token = token_at("tokenizer.ggml.bos_token_id");
  config.eos_token = token_at("tokenizer.ggml.eos_token_id");
  config.pad_token = token_at("tokenizer.ggml.padding_token_id");
  const std::string text = f.has("tokenizer.huggingface.json") ? f.get_string("tokenizer.huggingface.json")
                                                               : gguf_tokenizer_json(f);
  return std::make_unique<tokenizer::Tokenizer>(
      tokenizer::Tokenizer::from_json(text, f.path() + ": tokenizer", std::move(config)));
}

}  // namespace whale
