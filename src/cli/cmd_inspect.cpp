// whale inspect: summarise a checkpoint directory (config and tensors) and validate it fully.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "io/checkpoint.h"
#include "infer/kv_cache.h"

namespace whale::cli {

void register_inspect(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("inspect", "Load and validate a checkpoint, then print its shape");
  cmd->add_option("--model", *dir, "Checkpoint directory")->required();
  cmd->callback([dir] {
    auto model = load_model(*dir);
    const ModelConfig& c = model->config;
    std::printf("model_type %s\nlayers %lld (first %lld dense), hidden %lld, heads %lld\n", c.model_type.c_str(),
                (long long)c.num_hidden_layers, (long long)c.first_k_dense_replace, (long long)c.hidden_size,
                (long long)c.num_attention_heads);
    std::printf("experts %lld routed (top %lld, %lld groups, top %lld groups), %lld shared\n",
                (long long)c.n_routed_experts, (long long)c.num_experts_per_tok, (long long)c.n_group,
                (long long)c.topk_group, (long long)c.n_shared_experts);
    std::printf("MLA: q_lora_rank %lld, kv_lora_rank %lld, nope %lld, rope %lld, v %lld; yarn %s\n",
                (long long)c.q_lora_rank, (long long)c.kv_lora_rank, (long long)c.qk_nope_head_dim,
                (long long)c.qk_rope_head_dim, (long long)c.v_head_dim, c.rope_scaling.yarn ? "on" : "off");
    std::printf("MTP layers %lld\nparameters %.3fM (active %.3fM)\nKV cache %lld bytes/token (float32 latent)\n",
                (long long)c.num_nextn_predict_layers, double(c.parameter_count()) / 1e6,
                double(c.active_parameter_count()) / 1e6, (long long)KVCache::bytes_per_token(c));
    std::printf("tensors %zu in %zu file(s)\n", model->files->entries().size(), model->files->files().size());
  });
}

}  // namespace whale::cli
