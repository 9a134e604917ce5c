// The tokenizer inside a GGUF: tokenizer.ggml.* keys (llama.cpp's "gpt2" byte-level BPE with
// a named pre-tokenizer) <-> whale's Hugging Face style Tokenizer. Reading builds the
// tokenizer.json that the keys describe and loads it with the ordinary loader; writing also
// stores the original text as tokenizer.huggingface.json (a key of the GGUF spec) so that
// whale reads back exactly what it was given.
#pragma once
#include <memory>
#include <string>

#include "io/gguf.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace whale {

// Adds the keys for dir/tokenizer.json (and tokenizer_config.json beside it), padded to
// config.vocab_size tokens as llama.cpp expects. Returns false when dir has no tokenizer.json.
bool add_gguf_tokenizer(GgufWriter& writer, const std::string& dir, const ModelConfig& config);
// Copies the tokenizer.* keys of another GGUF (whale quantize).
void copy_gguf_tokenizer(GgufWriter& writer, const GgufFile& from);

// The tokenizer a GGUF holds, or null when it has no tokenizer.ggml.model key.
std::unique_ptr<tokenizer::Tokenizer> gguf_tokenizer(const GgufFile& file);

// tokenizer.json text for tokenizer.ggml.* values (exposed for tests). pre is the
// tokenizer.ggml.pre name: deepseek-v3, deepseek-llm, or gpt2/default.
std::string gguf_tokenizer_json(const GgufFile& file);

}  // namespace whale
