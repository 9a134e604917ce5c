// whale export-gguf: a whale or Hugging Face checkpoint (FP8 ones dequantised) as a deepseek2
// GGUF for llama.cpp-family engines, tokenizer included.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "io/gguf_model.h"

namespace whale::cli {

void register_export_gguf(CLI::App& app) {
  struct Options {
    std::string model, out, type = "f32";
    bool no_mtp = false, kv_b = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("export-gguf", "Write a checkpoint as a deepseek2 GGUF file (llama.cpp layout)");
  cmd->add_option("--model", opt->model, "Checkpoint directory (or a GGUF file)")->required();
  cmd->add_option("--out", opt->out, "Output .gguf file")->required();
  cmd->add_option("--type", opt->type, "Projection type: f32, f16, bf16, q8_0, q4_0, q4_k (q6_k output) or q6_k")
      ->capture_default_str();
  cmd->add_flag("--no-mtp", opt->no_mtp, "Leave out the MTP module (blk.N.nextn.*)");
  cmd->add_flag("--kv-b", opt->kv_b, "Write attn_kv_b as one tensor (older llama.cpp) instead of attn_k_b + attn_v_b");
  cmd->callback([opt] {
    GgufExportOptions options;
    options.type = parse_ggml_type(opt->type, "--type");
    options.mtp = !opt->no_mtp;
    options.split_kv_b = !opt->kv_b;
    auto model = load_model(opt->model);
    TerminalProgress progress;
    export_gguf(*model, opt->out, options, &progress);
    std::fprintf(stderr, "wrote %s (%s)\n", opt->out.c_str(), opt->type.c_str());
  });
}

}  // namespace whale::cli
