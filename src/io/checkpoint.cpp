#include "io/checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/mmap.h"
#include "core/rng.h"
#include "io/gguf_model.h"

namespace whale {

namespace fs = std::filesystem;

void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, int64_t br, int64_t bc,
                         std::vector<uint8_t>* q, std::vector<float>* scale_inv) {
  const int64_t brows = (rows + br - 1) / br, bcols = (cols + bc - 1) / bc;
  q->assign(size_t(rows * cols), 0);
  scale_inv->assign(size_t(brows * bcols), 1.0f);
  for (int64_t bi = 0; bi < brows; ++bi) {
    for (int64_t bj = 0; bj < bcols; ++bj) {
      float amax = 0.0f;
      for (int64_t i = bi * br; i < std::min(rows, (bi + 1) * br); ++i)
        for (int64_t j = bj * bc; j < std::min(cols, (bj + 1) * bc); ++j) amax = std::max(amax, std::fabs(w[i * cols + j]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;  // E4M3's largest finite value
      (*scale_inv)[size_t(bi * bcols + bj)] = scale;
      for (int64_t i = bi * br; i < std::min(rows, (bi + 1) * br); ++i)
        for (int64_t j = bj * bc; j < std::min(cols, (bj + 1) * bc); ++j)
          (*q)[size_t(i * cols + j)] = f32_to_fp8_e4m3(w[i * cols + j] / scale);
    }
  }
}

void dequantize_fp8_blocks(const uint8_t* q, const float* scale_inv, int64_t rows, int64_t cols,
                           int64_t br, int64_t bc, float* out) {
  const int64_t bcols = (cols + bc - 1) / bc;
  float table[256];
  for (int v = 0; v < 256; ++v) table[v] = fp8_e4m3_to_f32(uint8_t(v));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = scale_inv + (i / br) * bcols;
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = table[q[i * cols + j]] * s[j / bc];
  }
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

float* own(Model& m, size_t n) {
  m.owned.emplace_back(n);
  return m.owned.back().data();
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& options) {
  if (is_gguf_file(path)) return load_gguf_model(path, options);
  auto model = std::make_unique<Model>();
  if (!fs::is_directory(path)) throw Error(path, "not a checkpoint directory (expected config.json + *.safetensors)");
  // A training run directory names its newest checkpoint in `latest`.
  std::string dir = path;
  if (!fs::exists(fs::path(path) / "config.json") && fs::exists(fs::path(path) / "latest")) {
    std::string name = read_text_file((fs::path(path) / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    dir = (fs::path(path) / name).string();
  }
  model->source = dir;
  model->config = load_model_config((fs::path(dir) / "config.json").string());
  model->files = std::make_unique<SafetensorsSet>(dir);
  const ModelConfig& c = model->config;
  std::map<std::string, Tensor*> bound;
  std::vector<std::pair<Tensor*, std::string>> aliases;
  visit_weights(c, model->weights, [&](Tensor& t, const TensorSpec& spec) {
    if (!model->files->has(spec.name)) {
      if (!spec.alias_of.empty()) {
        aliases.push_back({&t, spec.alias_of});
        return;
      }
      model->files->get(spec.name);  // throws: missing tensor
    }
    const auto& entry = model->files->get(spec.name);
    const TensorInfo& info = *entry.info;
    const std::string where = entry.file->path() + ": tensor '" + spec.name + "'";
    if (info.shape != spec.shape)
      throw Error(where, "has shape " + shape_str(info.shape) + "; config.json implies " + shape_str(spec.shape));
    t.shape = spec.shape;
    const int64_t n = info.numel();
    uint8_t* src = entry.data();
    switch (info.dtype) {
      case DType::F32:
        if (reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
          t.dtype = DType::F32;
          t.data = src;
        } else {
          float* dst = own(*model, size_t(n));
          std::memcpy(dst, src, size_t(n) * 4);
          t.data = dst;
        }
        break;
      case DType::BF16:
        if (spec.linear && options.keep_bf16 && reinterpret_cast<uintptr_t>(src) % 2 == 0) {
          t.dtype = DType::BF16;
          t.data = src;
        } else {
          float* dst = own(*model, size_t(n));
          for (int64_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
          }
          t.data = dst;
        }
        break;
      case DType::F16: {
        float* dst = own(*model, size_t(n));
        for (int64_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          dst[i] = f16_to_f32(h);
        }
        t.data = dst;
        break;
      }
      case DType::F8_E4M3: {
        if (spec.shape.size() != 2) throw Error(where, "FP8 storage is supported for 2-D weights only");
        const std::string scale_name = spec.name + "_scale_inv";
        if (!model->files->has(scale_name))
          throw Error(where, "is F8_E4M3 but its block scale '" + scale_name + "' is missing");
        const auto& scale = model->files->get(scale_name);
        const int64_t br = c.fp8_block_rows, bc = c.fp8_block_cols;
        const std::vector<int64_t> want{(spec.shape[0] + br - 1) / br, (spec.shape[1] + bc - 1) / bc};
        if (scale.info->dtype != DType::F32 || scale.info->shape != want)
          throw Error(scale.file->path() + ": tensor '" + scale_name + "'",
                      "expected F32 " + shape_str(want) + " block scales, found " + dtype_name(scale.info->dtype) +
                          " " + shape_str(scale.info->shape));
        std::vector<float> scales(size_t(scale.info->numel()));
        std::memcpy(scales.data(), scale.data(), scales.size() * 4);
        float* dst = own(*model, size_t(n));
        dequantize_fp8_blocks(src, scales.data(), spec.shape[0], spec.shape[1], br, bc, dst);
        t.data = dst;
        break;
      }
      default:
        throw Error(where, std::string("has dtype ") + dtype_name(info.dtype) + "; expected F32, BF16, F16 or F8_E4M3");
    }
    if (t.dtype == DType::F32) {
      // Non-finite weights would silently poison every output; say so at load time.
      const float* f = t.f32();
      for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(f[i])) throw Error(where, "contains a non-finite value at element " + std::to_string(i));
    }
    bound[spec.name] = &t;
  });
  for (auto& [t, target] : aliases) {
    auto it = bound.find(target);
    if (it == bound.end()) throw Error(dir, "missing tensor '" + target + "'");
    *t = *it->second;
  }
  return model;
}

std::unique_ptr<Model> init_model(const ModelConfig& config, const InitOptions& options) {
  auto model = std::make_unique<Model>();
  model->config = config;
  model->source = "(random init)";
  Rng rng(options.seed);
  std::map<std::string, Tensor*> bound;
  std::vector<std::pair<Tensor*, std::string>> aliases;
  visit_weights(config, model->weights, [&](Tensor& t, const TensorSpec& spec) {
    t.shape = spec.shape;
    t.dtype = DType::F32;
    if (!spec.alias_of.empty() && (config.tie_word_embeddings || spec.name != "lm_head.weight")) {
      aliases.push_back({&t, spec.alias_of});
      return;
    }
    float* dst = own(*model, size_t(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) {
      switch (spec.init) {
        case InitKind::Normal: dst[i] = float(rng.normal() * options.std); break;
        case InitKind::Ones: dst[i] = float(1.0 + (options.norm_jitter > 0 ? rng.normal() * options.norm_jitter : 0.0)); break;
        case InitKind::Zeros:
          dst[i] = options.router_bias_std > 0 ? float(rng.normal() * options.router_bias_std) : 0.0f;
          break;
      }
    }
    t.data = dst;
    bound[spec.name] = &t;
  });
  // MTP's embedding and head start as copies of the main ones (V3 stores them duplicated).
  for (auto& [t, target] : aliases) {
    Tensor* src = bound.at(target);
    float* dst = own(*model, size_t(src->numel()));
    std::memcpy(dst, src->data, size_t(src->numel()) * 4);
    t->data = dst;
  }
  return model;
}

void save_model(const Model& model, const std::string& dir, SaveDType dtype) {
  fs::create_directories(dir);
  ModelConfig config = model.config;
  config.fp8 = dtype == SaveDType::FP8;
  const int64_t br = config.fp8_block_rows, bc = config.fp8_block_cols;
  std::vector<TensorToWrite> out;
  std::vector<std::vector<uint8_t>> buffers;  // encoded copies; must outlive the write
  ModelWeights& w = const_cast<ModelWeights&>(model.weights);
  std::vector<std::pair<Tensor, TensorSpec>> tensors;
  visit_weights(config, w, [&](Tensor& t, const TensorSpec& spec) {
    if (spec.name == "lm_head.weight" && config.tie_word_embeddings) return;
    tensors.push_back({t, spec});
  });
  buffers.reserve(tensors.size() * 2);
  for (const auto& [t, spec] : tensors) {
    if (t.empty()) throw Error(spec.name, "tensor has no data to save");
    const int64_t n = t.numel();
    std::vector<float> as_f32;
    const float* f = nullptr;
    if (t.dtype == DType::F32) {
      f = t.f32();
    } else {  // BF16 view
      as_f32.resize(size_t(n));
      const uint16_t* h = static_cast<const uint16_t*>(t.data);
      for (int64_t i = 0; i < n; ++i) as_f32[size_t(i)] = bf16_to_f32(h[i]);
      f = as_f32.data();
    }
    if (dtype == SaveDType::FP8 && spec.fp8_eligible) {
      std::vector<uint8_t> q;
      std::vector<float> s;
      quantize_fp8_blocks(f, spec.shape[0], spec.shape[1], br, bc, &q, &s);
      buffers.push_back(std::move(q));
      out.push_back({spec.name, DType::F8_E4M3, spec.shape, buffers.back().data()});
      std::vector<uint8_t> sb(s.size() * 4);
      std::memcpy(sb.data(), s.data(), sb.size());
      buffers.push_back(std::move(sb));
      out.push_back({spec.name + "_scale_inv", DType::F32,
                     {(spec.shape[0] + br - 1) / br, (spec.shape[1] + bc - 1) / bc}, buffers.back().data()});
    } else if (dtype == SaveDType::BF16 && t.dtype == DType::BF16) {
      out.push_back({spec.name, DType::BF16, spec.shape, t.data});
    } else if (dtype == SaveDType::BF16) {
      std::vector<uint8_t> b(size_t(n) * 2);
      uint16_t* h = reinterpret_cast<uint16_t*>(b.data());
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(f[i]);
      buffers.push_back(std::move(b));
      out.push_back({spec.name, DType::BF16, spec.shape, buffers.back().data()});
    } else if (t.dtype == DType::F32) {
      out.push_back({spec.name, DType::F32, spec.shape, t.data});
    } else {
      std::vector<uint8_t> b(size_t(n) * 4);
      std::memcpy(b.data(), f, b.size());
      buffers.push_back(std::move(b));
      out.push_back({spec.name, DType::F32, spec.shape, buffers.back().data()});
    }
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  nlohmann::json j = model_config_to_json(config);
  j["torch_dtype"] = dtype == SaveDType::F32 ? "float32" : "bfloat16";
  const std::string text = j.dump(2) + "\n";
  write_file_atomic((fs::path(dir) / "config.json").string(), text.data(), text.size());
}

}  // namespace whale
