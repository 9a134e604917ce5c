// whale quantize IN OUT --type: re-encode a GGUF (or a checkpoint directory) as a GGUF of
// another tensor type; the tokenizer and metadata carry over.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "io/gguf_model.h"

namespace whale::cli {

void register_quantize(CLI::App& app) {
  struct Options {
    std::string in, out, type = "q8_0";
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("quantize", "Convert a GGUF (or checkpoint) to a GGUF of another type");
  cmd->add_option("IN", opt->in, "Input GGUF file or checkpoint directory")->required();
  cmd->add_option("OUT", opt->out, "Output .gguf file")->required();
  cmd->add_option("--type", opt->type, "f32, f16, bf16, q8_0, q4_0, q4_k or q6_k")->capture_default_str();
  cmd->callback([opt] {
    GgufExportOptions options;
    options.type = parse_ggml_type(opt->type, "--type");
    LoadOptions load;
    load.keep_bf16 = false;
    auto model = load_model(opt->in, load);
    // Keep the input's layout choices: MTP if it has it, split k_b/v_b unless it used attn_kv_b.
    if (model->gguf) options.split_kv_b = model->gguf->find("blk.0.attn_kv_b.weight") == nullptr;
    TerminalProgress progress;
    export_gguf(*model, opt->out, options, &progress);
    std::fprintf(stderr, "wrote %s (%s)\n", opt->out.c_str(), opt->type.c_str());
  });
}

}  // namespace whale::cli
