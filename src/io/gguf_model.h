// DeepSeek-V2/V3/R1 as llama.cpp's `deepseek2` GGUF architecture: hyperparameter keys <->
// ModelConfig, tensor names <-> the Hugging Face names that visit_weights() walks, and the
// loader / exporter built on them. Names, layouts and keys follow llama.cpp's
// convert_hf_to_gguf.py (DeepseekV2Model) and gguf-py's constants.
#pragma once
#include <memory>
#include <string>

#include "core/progress.h"
#include "io/checkpoint.h"
#include "io/gguf.h"

namespace whale {

// True when the file at path starts with the GGUF magic.
bool is_gguf_file(const std::string& path);

ModelConfig gguf_model_config(const GgufFile& file);

// Maps the file, reads the config and the tokenizer (Model::tokenizer), and binds every
// tensor. F32 tensors are used in place, BF16 projections too (keep_bf16); F16 and the
// block-quantised types are dequantised to owned F32 buffers.
std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& options = {});

struct GgufExportOptions {
  GgmlType type = GgmlType::F32;  // projections; norms, biases and the router stay F32
  bool mtp = true;                // write the MTP module(s) as blk.N.nextn.* when the model has them
  bool split_kv_b = true;         // attn_k_b + attn_v_b (current llama.cpp) instead of attn_kv_b
  std::string tokenizer_dir;      // holds tokenizer.json (+ tokenizer_config.json); "" for none
};

// Writes model as a deepseek2 GGUF (atomically), reporting tensors written to progress.
void export_gguf(const Model& model, const std::string& path, const GgufExportOptions& options,
                 Progress* progress = nullptr);

// Writes a randomly initialised model of config as a deepseek2 GGUF (atomically) without ever
// holding more than one tensor in memory, so a model larger than RAM can be made (the V2-Lite
// benchmark). Normal-init tensors get init.std x an approximately normal variate (Irwin-Hall, 4
// uniforms; not init_model's Box-Muller stream), one seeded stream per tensor row; norms and
// biases follow init as init_model does. Tokenizer from options.tokenizer_dir when set.
void write_random_gguf(const ModelConfig& config, const std::string& path, const GgufExportOptions& options,
                       const InitOptions& init, Progress* progress = nullptr);

// The ggml type of a --type spelling (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k).
GgmlType parse_ggml_type(const std::string& text, const std::string& option);

// The GGUF tensor name of a Hugging Face tensor name; *expert is set for routed experts
// (stacked into one 3-D GGUF tensor), else -1. Throws for names outside the model.
std::string gguf_tensor_name(const std::string& hf_name, int64_t* expert);

}  // namespace whale
