// Each subcommand lives in its own file and registers itself on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace whale::cli {
void register_init(CLI::App& app);
void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_inspect(CLI::App& app);
void register_tokenizer(CLI::App& app);
void register_grad(CLI::App& app);
void register_data(CLI::App& app);
void register_pretrain(CLI::App& app);
void register_plot(CLI::App& app);
void register_sft(CLI::App& app);  // sft and sft-data
void register_eval(CLI::App& app);
void register_distill(CLI::App& app);
void register_chat(CLI::App& app);
void register_serve(CLI::App& app);
void register_grpo(CLI::App& app);
void register_export_gguf(CLI::App& app);
void register_quantize(CLI::App& app);
}  // namespace whale::cli
