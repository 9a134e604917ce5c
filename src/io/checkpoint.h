// Checkpoint directories: config.json + model.safetensors (or a sharded index), with the
// official Hugging Face tensor names. whale's own checkpoints use the same layout.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/mmap.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace whale {

// Whether Transformers repack a model's Q8_0 projections (attention, dense and expert MLPs, MTP
// projections, LM head: a GGUF's mapped tensors or quantize_weights' copies) into the layout of
// the AVX-512 VNNI kernels (kernels/qmatmul.h: repack_q8_0_x16), in anonymous memory. Same bits
// out; a V2-Lite decode step reads its weights ~1.2x faster. Auto: when the CPU has the kernels
// and the copy fits in MemAvailable with 1 GiB to spare (a model larger than memory keeps
// streaming from its mapping); WHALE_REPACK=0 or 1 turns Auto into Off or On. On: whenever the
// CPU has the kernels. Off: never (weights read as mapped).
enum class WeightRepack { Auto, Off, On };

// Projection weights re-laid out for the CPU's kernels (WeightRepack):
// Q8_0 matrices in kernels/qmatmul.h's x16 layout, in one arena.
struct RepackedWeights {
  AnonymousMemory arena;
  std::unordered_map<const void*, std::pair<size_t, size_t>> tensors;  // source tensor's data -> (offset, bytes)
};

// A model's config and weights plus the memory that backs them (mapped files, owned buffers).
struct Model {
  ModelConfig config;
  ModelWeights weights;
  std::unique_ptr<SafetensorsSet> files;     // memory-mapped sources
  std::unique_ptr<GgufFile> gguf;            // memory-mapped GGUF source (load_model of a .gguf file)
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;  // the tokenizer stored in a GGUF; null otherwise
  std::vector<std::vector<float>> owned;     // dequantised or freshly initialised tensors
  std::string source;
  // Made by the first Transformer that repacks this model's weights, shared by every later one
  // (a speculative and a plain generator on one 16 GB model hold one copy, not two).
  mutable std::shared_ptr<const RepackedWeights> repacked;
  // What a Transformer built with WeightRepack::Auto does (the CLI's --repack).
  WeightRepack repack_policy = WeightRepack::Auto;
};

struct LoadOptions {
  // Keep BF16 projection matrices as mapped BF16 (half the memory, read by the BF16 kernels);
  // when false every tensor becomes F32.
  bool keep_bf16 = true;
  // GGUF files: keep Q8_0/Q4_0/Q4_K/Q6_K projections as the mapped blocks (linear() runs them
  // through the quantised kernels); when false they are dequantised to F32 at load.
  bool keep_quantized = true;
};

// dir: a checkpoint directory, a run directory (follows `latest`), or a GGUF file.
std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& options = {});

struct InitOptions {
  uint64_t seed = 0;
  double std = 0.02;             // initializer_range, as Hugging Face's DeepSeek configs use
  double norm_jitter = 0.0;      // norms = 1 + N(0, jitter); 0 gives exact ones (tests use > 0)
  double router_bias_std = 0.0;  // e_score_correction_bias ~ N(0, std); 0 gives zeros
};
std::unique_ptr<Model> init_model(const ModelConfig& config, const InitOptions& options);

enum class SaveDType { F32, BF16, FP8 };
// Writes config.json and model.safetensors into dir (created if needed), each atomically.
// FP8 stores eligible projections as E4M3 with 128x128 block scales (weight_scale_inv).
void save_model(const Model& model, const std::string& dir, SaveDType dtype = SaveDType::F32);

// FP8 block quantisation of one [rows, cols] matrix; scale_inv is [ceil(rows/br), ceil(cols/bc)].
void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, int64_t br, int64_t bc,
                         std::vector<uint8_t>* q, std::vector<float>* scale_inv);
void dequantize_fp8_blocks(const uint8_t* q, const float* scale_inv, int64_t rows, int64_t cols,
                           int64_t br, int64_t bc, float* out);

}  // namespace whale
