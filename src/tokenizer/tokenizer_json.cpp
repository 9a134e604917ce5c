// Loading tokenizer.json and tokenizer_config.json, with errors that name the bad field.
#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/error.h"
#include "core/mmap.h"
#include "tokenizer/tokenizer.h"

namespace whale::tokenizer {

using nlohmann::json;

class TokenizerJsonLoader {
 public:
  static Tokenizer load(std::string_view text, const std::string& where, TokenizerConfig config);
  static TokenizerConfig load_config(const std::string& path);

 private:
  static std::unique_ptr<BpeModel> model(const json& j, const std::string& where);
  static void added(const json& j, const std::string& where, AddedTokens& out);
  static void normalizer(const json& j, const std::string& where, Normalizer& out);
  static void pre_tokenizer(const json& j, const std::string& where, PreTokenizer& out);
  static void decoder(const json& j, const std::string& where);
  static void post_processor(const json& j, const std::string& where, Tokenizer& tok);
};

namespace {

const json& require(const json& j, const char* key, const std::string& where) {
  if (!j.is_object()) throw Error(where, "expected an object");
  auto it = j.find(key);
  if (it == j.end()) throw Error(where, std::string("missing field \"") + key + "\"");
  return *it;
}

std::string require_string(const json& j, const char* key, const std::string& where) {
  const json& v = require(j, key, where);
  if (!v.is_string()) throw Error(where + "." + key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

bool optional_bool(const json& j, const char* key, bool fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw Error(where + "." + key, "expected true or false, got " + it->dump());
  return it->get<bool>();
}

std::string type_of(const json& j, const std::string& where) {
  return require_string(j, "type", where);
}

// bos_token and friends are either a string or an AddedToken object with "content".
std::string token_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return require_string(*it, "content", where + "." + key);
  throw Error(where + "." + key, "expected a string or an object with \"content\"");
}

}  // namespace

std::unique_ptr<BpeModel> TokenizerJsonLoader::model(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where, "expected an object");
  if (j.contains("type") && type_of(j, where) != "BPE")
    throw Error(where + ".type", "unsupported model \"" + type_of(j, where) + "\" (only BPE)");
  if (optional_bool(j, "byte_fallback", false, where))
    throw Error(where + ".byte_fallback", "byte_fallback is not supported (byte-level BPE only)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      throw Error(where + "." + key, "non-empty affixes are not supported");
  }
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null() && it->get<double>() > 0)
    throw Error(where + ".dropout", "BPE dropout is not supported");

  const json& vocab_json = require(j, "vocab", where);
  if (!vocab_json.is_object()) throw Error(where + ".vocab", "expected an object of token: id");
  TokenIds vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    if (!it.value().is_number_integer())
      throw Error(where + ".vocab[\"" + it.key() + "\"]", "expected an integer id, got " +
                                                            it.value().dump());
    vocab.emplace(it.key(), it.value().get<int>());
  }

  const json& merges_json = require(j, "merges", where);
  if (!merges_json.is_array()) throw Error(where + ".merges", "expected an array");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    const json& m = merges_json[i];
    std::string field = where + ".merges[" + std::to_string(i) + "]";
    if (m.is_string()) {
      // Old format "a b": tokens never contain a plain space in byte-level BPE.
      std::string s = m.get<std::string>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        throw Error(field, "expected two tokens separated by one space, got \"" + s + "\"");
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw Error(field, "expected \"a b\" or [\"a\", \"b\"], got " + m.dump());
    }
  }
  int unk_id = -1;
  if (auto it = j.find("unk_token"); it != j.end() && it->is_string()) {
    auto v = vocab.find(it->get<std::string>());
    if (v == vocab.end())
      throw Error(where + ".unk_token", "\"" + it->get<std::string>() + "\" is not in the vocab");
    unk_id = v->second;
  }
  return std::make_unique<BpeModel>(std::move(vocab), merges, where,
                                    optional_bool(j, "ignore_merges", false, where), unk_id);
}

void TokenizerJsonLoader::added(const json& j, const std::string& where, AddedTokens& out) {
  if (j.is_null()) return;
  if (!j.is_array()) throw Error(where, "expected an array");
  for (size_t i = 0; i < j.size(); ++i) {
    std::string field = where + "[" + std::to_string(i) + "]";
    const json& t = j[i];
    AddedToken token;
    const json& id = require(t, "id", field);
    if (!id.is_number_integer() || id.get<long long>() < 0)
      throw Error(field + ".id", "expected a non-negative integer, got " + id.dump());
    token.id = id.get<int>();
    token.content = require_string(t, "content", field);
    if (token.content.empty()) throw Error(field + ".content", "empty added token");
    token.special = optional_bool(t, "special", false, field);
    token.lstrip = optional_bool(t, "lstrip", false, field);
    token.rstrip = optional_bool(t, "rstrip", false, field);
    token.single_word = optional_bool(t, "single_word", false, field);
    token.normalized = optional_bool(t, "normalized", false, field);
    out.add(std::move(token));
  }
}

void TokenizerJsonLoader::normalizer(const json& j, const std::string& where, Normalizer& out) {
  if (j.is_null()) return;
  std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "normalizers", where);
    if (!list.is_array()) throw Error(where + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]", out);
  } else if (type == "NFC") {
    out.add(NormalForm::NFC);
  } else if (type == "NFD") {
    out.add(NormalForm::NFD);
  } else if (type == "NFKC") {
    out.add(NormalForm::NFKC);
  } else if (type == "NFKD") {
    out.add(NormalForm::NFKD);
  } else {
    throw Error(where + ".type", "unsupported normalizer \"" + type +
                                     "\" (supported: NFC, NFD, NFKC, NFKD, Sequence)");
  }
}

void TokenizerJsonLoader::pre_tokenizer(const json& j, const std::string& where,
                                        PreTokenizer& out) {
  if (j.is_null()) return;
  std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "pretokenizers", where);
    if (!list.is_array()) throw Error(where + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", out);
  } else if (type == "Split") {
    const json& pattern = require(j, "pattern", where);
    SplitBehavior behavior = parse_split_behavior(require_string(j, "behavior", where), where + ".behavior");
    bool invert = optional_bool(j, "invert", false, where);
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      out.add_regex_split(pattern["Regex"].get<std::string>(), behavior, invert, where + ".pattern.Regex");
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      out.add_string_split(pattern["String"].get<std::string>(), behavior, invert, where + ".pattern.String");
    } else {
      throw Error(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}, got " + pattern.dump());
    }
  } else if (type == "ByteLevel") {
    out.add_byte_level(optional_bool(j, "add_prefix_space", true, where),
                       optional_bool(j, "use_regex", true, where), where);
  } else {
    throw Error(where + ".type", "unsupported pre-tokenizer \"" + type +
                                     "\" (supported: Sequence, Split, ByteLevel)");
  }
}

void TokenizerJsonLoader::decoder(const json& j, const std::string& where) {
  if (j.is_null()) return;
  std::string type = type_of(j, where);
  if (type != "ByteLevel")
    throw Error(where + ".type", "unsupported decoder \"" + type + "\" (only ByteLevel)");
}

// TemplateProcessing's "single" template: special tokens around the sequence "A". Other
// post-processors (ByteLevel, RobertaProcessing's offsets) add no ids for a single text.
void TokenizerJsonLoader::post_processor(const json& j, const std::string& where, Tokenizer& tok) {
  if (j.is_null()) return;
  std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "processors", where);
    if (!list.is_array()) throw Error(where + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      post_processor(list[i], where + ".processors[" + std::to_string(i) + "]", tok);
    return;
  }
  if (type != "TemplateProcessing") return;
  const json& single = require(j, "single", where);
  if (!single.is_array()) throw Error(where + ".single", "expected an array");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    std::string field = where + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      seen_sequence = true;
    } else if (item.is_object() && item.contains("SpecialToken")) {
      std::string name = require_string(item["SpecialToken"], "id", field + ".SpecialToken");
      int id = tok.token_to_id(name);
      if (id < 0) throw Error(field, "special token \"" + name + "\" is not in the vocab");
      (seen_sequence ? tok.special_suffix_ : tok.special_prefix_).push_back(id);
    } else {
      throw Error(field, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
}

Tokenizer TokenizerJsonLoader::load(std::string_view text, const std::string& where,
                                    TokenizerConfig config) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(where, std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw Error(where, "expected a JSON object at the top level");
  Tokenizer tok;
  tok.config_ = std::move(config);
  try {
    tok.model_ = model(require(root, "model", where), where + ": model");
    tok.added_ = std::make_unique<AddedTokens>();
    if (root.contains("added_tokens")) added(root["added_tokens"], where + ": added_tokens", *tok.added_);
    if (root.contains("normalizer")) normalizer(root["normalizer"], where + ": normalizer", tok.normalizer_);
    tok.pre_tokenizer_ = std::make_unique<PreTokenizer>();
    if (root.contains("pre_tokenizer"))
      pre_tokenizer(root["pre_tokenizer"], where + ": pre_tokenizer", *tok.pre_tokenizer_);
    if (!tok.pre_tokenizer_->byte_level())
      throw Error(where + ": pre_tokenizer", "no ByteLevel step: only byte-level BPE is supported");
    if (root.contains("decoder")) decoder(root["decoder"], where + ": decoder");
    if (root.contains("post_processor"))
      post_processor(root["post_processor"], where + ": post_processor", tok);
  } catch (const json::exception& e) {
    // Type mismatches that the checks above did not anticipate still name the file.
    throw Error(where, std::string("malformed field: ") + e.what());
  }
  tok.finish_setup();
  return tok;
}

TokenizerConfig TokenizerJsonLoader::load_config(const std::string& path) {
  TokenizerConfig config;
  json root;
  try {
    root = json::parse(read_text_file(path));
  } catch (const json::parse_error& e) {
    throw Error(path, std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw Error(path, "expected a JSON object at the top level");
  config.add_bos_token = optional_bool(root, "add_bos_token", false, path);
  config.add_eos_token = optional_bool(root, "add_eos_token", false, path);
  config.bos_token = token_field(root, "bos_token", path);
  config.eos_token = token_field(root, "eos_token", path);
  config.pad_token = token_field(root, "pad_token", path);
  if (auto it = root.find("chat_template"); it != root.end() && it->is_string())
    config.chat_template = it->get<std::string>();
  return config;
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& where,
                               TokenizerConfig config) {
  return TokenizerJsonLoader::load(json_text, where, std::move(config));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  TokenizerConfig config;
  fs::path config_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path)) config = TokenizerJsonLoader::load_config(config_path.string());
  return TokenizerJsonLoader::load(read_text_file(path), path, std::move(config));
}

}  // namespace whale::tokenizer
