// whale serve: the OpenAI-compatible server (src/serve) over the continuous-batching engine.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/util.h"
#include "core/error.h"
#include "infer/engine.h"
#include "io/checkpoint.h"
#include "serve/server.h"

namespace whale::cli {

namespace {
serve::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}
}  // namespace

void register_serve(CLI::App& app) {
  struct Options {
    std::string model, attn = "auto", repack = "auto", chat_format = "deepseek-v3", model_name;
    serve::ServerOptions server;
    int64_t kv_budget_mb = 0, kv_budget_tokens = 0;
    EngineOptions engine;
    bool no_prefix_cache = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching and a web chat page");
  cmd->add_option("--model", opt->model, "Checkpoint directory (with tokenizer.json)")->required();
  cmd->add_option("--host", opt->server.host, "Address to bind")->capture_default_str();
  cmd->add_option("--port", opt->server.port, "Port (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--api-key", opt->server.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/* and /metrics (default: $WHALE_API_KEY)");
  cmd->add_option("--model-name", opt->model_name, "Model id reported by /v1/models (default: the directory name)");
  cmd->add_option("--chat-format", opt->chat_format, "deepseek-v3 or deepseek-r1")->capture_default_str();
  cmd->add_option("--kv-budget-mb", opt->kv_budget_mb, "KV-cache budget in MiB (default: 1024 unless --kv-budget-tokens)");
  cmd->add_option("--kv-budget-tokens", opt->kv_budget_tokens, "KV-cache budget in tokens");
  cmd->add_option("--max-batch", opt->engine.max_batch, "Sequences decoding at once")->capture_default_str();
  cmd->add_option("--prefill-chunk", opt->engine.prefill_chunk, "Prompt tokens run per step (all new prompts together)")
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", opt->no_prefix_cache, "Do not keep finished conversations' KV cache for reuse");
  cmd->add_option("--max-tokens-default", opt->server.generation.default_max_tokens,
                  "max_tokens when a request gives none")->capture_default_str();
  cmd->add_option("--max-prompt-tokens", opt->server.generation.max_prompt_tokens,
                  "Longest prompt accepted (0: the context length)")->capture_default_str();
  cmd->add_option("--max-body-bytes", opt->server.limits.max_body_bytes, "Largest request body")->capture_default_str();
  cmd->add_option("--max-messages", opt->server.limits.max_messages, "Most messages in one chat request")
      ->capture_default_str();
  cmd->add_option("--threads", opt->server.threads, "HTTP worker threads (each open stream holds one)")
      ->capture_default_str();
  cmd->add_option("--seed", opt->server.seed, "Seeds requests that give no seed")->capture_default_str();
  cmd->add_option("--attn", opt->attn, "Attention path: auto, absorb or naive")->capture_default_str();
  add_repack_option(cmd, &opt->repack);
  cmd->callback([opt] {
    if (opt->server.api_key.empty())
      if (const char* k = std::getenv("WHALE_API_KEY")) opt->server.api_key = k;
    if (opt->server.threads < 2) throw Error("--threads", "must be at least 2");
    auto model = load_model(opt->model);
    apply_repack(*model, opt->repack);
    auto tok = take_tokenizer(*model);  // the checkpoint's tokenizer.json, or the one inside a GGUF file
    if (!tok)
      throw Error(opt->model, "whale serve needs a tokenizer: the checkpoint's tokenizer.json (tokenizer_config.json "
                              "beside it is read too) or one stored in the GGUF file");
    if (tok->vocab_size() > model->config.vocab_size)
      throw Error(opt->model, "tokenizer has " + std::to_string(tok->vocab_size()) + " ids but the model's vocab_size is " +
                                  std::to_string(model->config.vocab_size));
    const int64_t per_token = KVPool::bytes_per_token(model->config);
    if (opt->kv_budget_tokens > 0 && opt->kv_budget_mb > 0)
      throw Error("--kv-budget-mb", "give either --kv-budget-mb or --kv-budget-tokens");
    opt->engine.kv_budget_tokens = opt->kv_budget_tokens > 0 ? opt->kv_budget_tokens
                                                              : (opt->kv_budget_mb > 0 ? opt->kv_budget_mb : 1024) *
                                                                    (int64_t(1) << 20) / per_token;
    opt->engine.prefix_reuse = !opt->no_prefix_cache;
    opt->engine.attention = parse_attention_mode(opt->attn);
    opt->server.generation.format = tokenizer::parse_chat_format(opt->chat_format);
    opt->server.model_name = !opt->model_name.empty() ? opt->model_name
                                                       : std::filesystem::path(opt->model).lexically_normal().filename().string();
    if (opt->server.model_name.empty()) opt->server.model_name = "whale";
    std::vector<int32_t> eos;
    eos.push_back(tok->eos_id() >= 0 ? int32_t(tok->eos_id()) : int32_t(model->config.eos_token_id));
    // KV caches are large, short-lived blocks: a fixed mmap threshold returns them to the OS
    // when freed (glibc's sliding threshold would keep them in the heap and RSS would creep).
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    Engine engine(*model, opt->engine, eos);
    serve::Server server(engine, *tok, opt->server);
    const int port = server.bind();
    std::fprintf(stderr, "whale serve: %s on http://%s:%d (KV budget %lld tokens, %.0f MiB; %s)\n",
                 opt->server.model_name.c_str(), opt->server.host.c_str(), port, (long long)opt->engine.kv_budget_tokens,
                 double(opt->engine.kv_budget_tokens * per_token) / double(1 << 20),
                 opt->server.api_key.empty() ? "no API key" : "API key required");
    std::fflush(stderr);
    g_server = &server;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    server.run();
    g_server = nullptr;
  });
}

}  // namespace whale::cli
