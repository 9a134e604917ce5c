// whale logits: float32 logits for every position, through the KV-cache path, so that any
// outside reference can check the engine.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/util.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "model/transformer.h"

namespace whale::cli {

void register_logits(CLI::App& app) {
  struct Options {
    std::string model, tokens, out, mtp_out, attn = "auto", repack = "auto";
    int64_t chunk = 0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "Write little-endian float32 logits [positions, vocab_size]");
  cmd->add_option("--model", opt->model, "Checkpoint directory")->required();
  cmd->add_option("--tokens", opt->tokens, "Comma-separated token ids")->required();
  cmd->add_option("--out", opt->out, "Output file")->required();
  cmd->add_option("--mtp-out", opt->mtp_out,
                  "Also write the MTP head's logits: row i predicts token i+2 from position i and token i+1");
  cmd->add_option("--attn", opt->attn, "Attention path: auto, absorb or naive")->capture_default_str();
  add_repack_option(cmd, &opt->repack);
  cmd->add_option("--chunk", opt->chunk,
                  "Feed the tokens through the cache in chunks of this size (0: one prefill; 1: token by token)")
      ->capture_default_str();
  cmd->callback([opt] {
    auto model = load_model(opt->model);
    apply_repack(*model, opt->repack);
    const ModelConfig& c = model->config;
    std::vector<int32_t> tokens = parse_token_list(opt->tokens, "--tokens");
    const int64_t n = int64_t(tokens.size());
    if (opt->chunk < 0) throw Error("--chunk", "must be >= 0");
    Transformer tf(*model, parse_attention_mode(opt->attn));
    KVCache cache(c, n);
    std::vector<float> hidden(size_t(n * c.hidden_size));
    const int64_t chunk = opt->chunk == 0 ? n : opt->chunk;
    for (int64_t p = 0; p < n; p += chunk) {
      const int64_t rows = std::min(chunk, n - p);
      tf.forward(tokens.data() + p, {SeqSpan{&cache, 0, rows, p}}, hidden.data() + p * c.hidden_size);
    }
    std::vector<int64_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
    std::vector<float> logits(size_t(n * c.vocab_size));
    tf.logits(hidden.data(), all, logits.data());
    write_f32_file(opt->out, logits);
    if (!opt->mtp_out.empty()) {
      if (c.num_nextn_predict_layers == 0) throw Error("--mtp-out", "the model has no MTP layer (num_nextn_predict_layers = 0)");
      std::vector<float> mtp(size_t(std::max<int64_t>(n - 1, 0) * c.vocab_size));
      if (n > 1) {
        for (int64_t p = 0; p < n - 1; p += chunk) {
          const int64_t rows = std::min(chunk, n - 1 - p);
          tf.mtp_logits(hidden.data() + p * c.hidden_size, tokens.data() + p + 1, {SeqSpan{&cache, 0, rows, p}},
                        mtp.data() + p * c.vocab_size);
        }
      }
      write_f32_file(opt->mtp_out, mtp);
    }
  });
}

}  // namespace whale::cli
