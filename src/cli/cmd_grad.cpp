// whale grad: gradients of the training loss w.r.t. every parameter, under each parameter's
// checkpoint name, so any outside reference can check the hand-written backward pass.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/util.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"

namespace whale::cli {

void register_grad(CLI::App& app) {
  struct Options {
    std::string model, tokens, out;
    double mtp_lambda = 0.0, balance_alpha = 0.0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "grad", "Write d(loss)/d(parameter) for every parameter as F32 safetensors (loss: mean next-token cross-entropy)");
  cmd->add_option("--model", opt->model, "Checkpoint directory")->required();
  cmd->add_option("--tokens", opt->tokens, "Comma-separated token ids (at least 2)")->required();
  cmd->add_option("--out", opt->out, "Output .safetensors file")->required();
  cmd->add_option("--mtp-lambda", opt->mtp_lambda, "Add lambda * the MTP head's cross-entropy (default: left out)")
      ->capture_default_str();
  cmd->add_option("--balance-alpha", opt->balance_alpha,
                  "Add alpha * the sequence-wise balance loss of every MoE layer (default: left out)")
      ->capture_default_str();
  cmd->callback([opt] {
    LoadOptions lo;
    lo.keep_bf16 = false;
    auto model = load_model(opt->model, lo);
    std::vector<int32_t> tokens = parse_token_list(opt->tokens, "--tokens");
    if (tokens.size() < 2) throw Error("--tokens", "needs at least 2 tokens (one input, one target)");
    if (opt->mtp_lambda < 0 || opt->balance_alpha < 0) throw Error("--mtp-lambda/--balance-alpha", "must be >= 0");
    TrainGraph graph(*model);
    Gradients grads(*model);
    TrainBatch batch;
    batch.B = 1;
    batch.T = int64_t(tokens.size()) - 1;
    batch.tokens = tokens.data();
    LossOptions lopt;
    lopt.mtp_lambda = opt->mtp_lambda;
    lopt.balance_alpha = opt->balance_alpha;
    LossReport rep = graph.forward_backward(batch, lopt, grads);
    std::vector<TensorToWrite> out;
    visit_weights(model->config, grads.weights, [&](Tensor& t, const TensorSpec& spec) {
      if (spec.name.find("e_score_correction_bias") != std::string::npos) return;  // not trained by gradient
      if (spec.name == "lm_head.weight" && model->config.tie_word_embeddings) return;
      out.push_back({spec.name, DType::F32, spec.shape, t.data});
    });
    write_safetensors(opt->out, out, {{"loss", std::to_string(rep.loss)}});
    std::fprintf(stderr, "loss %.6f (main %.6f, mtp %.6f, balance %.6f); %zu gradients -> %s\n", rep.loss,
                 rep.main_loss, rep.mtp_loss, rep.balance_loss, out.size(), opt->out.c_str());
  });
}

}  // namespace whale::cli
