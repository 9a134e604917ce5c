// whale init: write a randomly initialised checkpoint of any configuration.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "io/gguf_model.h"

namespace whale::cli {

void register_init(CLI::App& app) {
  struct Options {
    std::string config, out, dtype = "f32", tokenizer, gguf;
    uint64_t seed = 0;
    double std = 0.02, norm_jitter = 0.0, router_bias_std = 0.0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("init", "Write a randomly initialised checkpoint (config.json + model.safetensors)");
  cmd->add_option("--config", opt->config, "Hugging Face style config.json to instantiate")->required();
  cmd->add_option("--out", opt->out, "Output checkpoint directory")->required();
  cmd->add_option("--seed", opt->seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", opt->dtype, "Storage: f32, bf16, or fp8 (E4M3 with 128x128 block scales)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}))
      ->capture_default_str();
  cmd->add_option("--tokenizer", opt->tokenizer,
                  "tokenizer.json to copy into the checkpoint (with tokenizer_config.json beside it, if present)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--gguf", opt->gguf,
                  "Write one deepseek2 GGUF file at --out with projections of this type (f32, f16, bf16, q8_0, q4_0, "
                  "q4_k, q6_k) instead of a checkpoint directory; streamed tensor by tensor, so the model may exceed RAM")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"}));
  cmd->add_option("--std", opt->std, "Standard deviation of the normal init")->capture_default_str();
  cmd->add_option("--norm-jitter", opt->norm_jitter, "Norm weights = 1 + N(0, jitter) (tests use this)")
      ->capture_default_str();
  cmd->add_option("--router-bias-std", opt->router_bias_std,
                  "Random e_score_correction_bias (tests use this; training starts at 0)")
      ->capture_default_str();
  cmd->callback([opt] {
    ModelConfig config = load_model_config(opt->config);
    InitOptions init;
    init.seed = opt->seed;
    init.std = opt->std;
    init.norm_jitter = opt->norm_jitter;
    init.router_bias_std = opt->router_bias_std;
    if (!opt->gguf.empty()) {
      GgufExportOptions options;
      options.type = parse_ggml_type(opt->gguf, "--gguf");
      if (!opt->tokenizer.empty()) options.tokenizer_dir = std::filesystem::path(opt->tokenizer).parent_path().string();
      TerminalProgress progress;
      write_random_gguf(config, opt->out, options, init, &progress);
      std::fprintf(stderr, "wrote %s: %.2fM parameters (%.2fM active per token), %s GGUF\n", opt->out.c_str(),
                   double(config.parameter_count()) / 1e6, double(config.active_parameter_count()) / 1e6,
                   opt->gguf.c_str());
      return;
    }
    auto model = init_model(config, init);
    SaveDType dtype = opt->dtype == "bf16" ? SaveDType::BF16 : opt->dtype == "fp8" ? SaveDType::FP8 : SaveDType::F32;
    save_model(*model, opt->out, dtype);
    if (!opt->tokenizer.empty()) {
      namespace fs = std::filesystem;
      const fs::path src(opt->tokenizer);
      fs::copy_file(src, fs::path(opt->out) / "tokenizer.json", fs::copy_options::overwrite_existing);
      const fs::path cfg = src.parent_path() / "tokenizer_config.json";
      if (fs::exists(cfg))
        fs::copy_file(cfg, fs::path(opt->out) / "tokenizer_config.json", fs::copy_options::overwrite_existing);
    }
    std::fprintf(stderr, "wrote %s: %.2fM parameters (%.2fM active per token), %s\n", opt->out.c_str(),
                 double(config.parameter_count()) / 1e6, double(config.active_parameter_count()) / 1e6,
                 opt->dtype.c_str());
  });
}

}  // namespace whale::cli
