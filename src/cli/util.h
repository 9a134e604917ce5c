// Small helpers shared by subcommands.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace CLI {
class App;
}

namespace whale::cli {

// Parses "5,17,42" into ids; throws whale::Error naming the option on a bad entry.
std::vector<int32_t> parse_token_list(const std::string& text, const std::string& option);
AttentionMode parse_attention_mode(const std::string& text);
// --repack auto|on|off (io/checkpoint.h: WeightRepack) on cmd, applied by apply_repack after load.
void add_repack_option(CLI::App* cmd, std::string* value);
void apply_repack(Model& model, const std::string& value);
// Binary file of little-endian float32, written atomically.
void write_f32_file(const std::string& path, const std::vector<float>& values);
// The model's tokenizer: the one stored in a GGUF file (taken out of the Model), else the
// checkpoint directory's tokenizer.json; null when there is neither.
std::unique_ptr<tokenizer::Tokenizer> take_tokenizer(Model& model);

}  // namespace whale::cli
