// The HTTP server in-process on a loopback port, driven by cpp-httplib's client: OpenAI response
// shapes (streaming and not), greedy text equal to the Generator's tokens decoded by the
// tokenizer, errors, authentication, prefix reuse across turns, /metrics, and a client that
// disconnects mid-stream freeing its slot and cache.
#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "infer/generate.h"
#include "io/checkpoint.h"
#include "serve/server.h"
#include "tokenizer/trainer.h"

using namespace whale;
using nlohmann::json;

namespace {

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  int32_t eos = -1;
  Fixture() {
    InitOptions init;
    init.seed = 3;
    init.std = 0.05;
    init.norm_jitter = 0.1;
    model = init_model(load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"), init);
    std::string text;
    for (int i = 0; i < 40; ++i) text += "The cat sat on the mat. A whale swims in the deep sea, singing. ";
    tokenizer::TrainOptions options;
    options.vocab_size = 400;
    options.threads = 1;
    tok = std::make_unique<tokenizer::Tokenizer>(
        tokenizer::Tokenizer::from_json(tokenizer::train_bpe_from_texts({text}, options), "test tokenizer"));
    eos = int32_t(tok->token_to_id("<｜end▁of▁sentence｜>"));  // no tokenizer_config.json here
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

// A server on a free loopback port, running on its own thread.
struct Running {
  Engine engine;
  serve::Server server;
  std::thread thread;
  int port = 0;
  Running(serve::ServerOptions options, EngineOptions engine_options = {})
      : engine(*fixture().model, engine_options, {fixture().eos}),
        server(engine, *fixture().tok, [&] {
          options.port = 0;
          options.threads = 8;
          return options;
        }()) {
    port = server.bind();
    thread = std::thread([this] { server.run(); });
  }
  ~Running() {
    server.stop();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60);
    return c;
  }
};

json post(const Running& s, const std::string& path, const json& body, int expect_status,
          const httplib::Headers& headers = {}) {
  auto c = s.client();
  auto res = c.Post(path, headers, body.dump(), "application/json");
  EXPECT_TRUE(res);
  if (!res) return {};
  EXPECT_EQ(res->status, expect_status) << res->body;
  return json::parse(res->body);
}

json chat_body(const std::string& user, int64_t max_tokens) {
  return {{"messages", {{{"role", "user"}, {"content", user}}}}, {"max_tokens", max_tokens}, {"temperature", 0}};
}

// data: lines of an SSE body, [DONE] excluded (checked to be last).
std::vector<json> sse_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  bool done = false;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    std::string data = body.substr(pos + 6, end - pos - 6);
    EXPECT_FALSE(done) << "event after [DONE]";
    if (data == "[DONE]") done = true;
    else out.push_back(json::parse(data));
    pos = end;
  }
  EXPECT_TRUE(done);
  return out;
}

}  // namespace

TEST(Server, ChatMatchesGeneratorAndStreamsTheSameText) {
  Running s({});
  const std::string user = "The whale sat";
  json r = post(s, "/v1/chat/completions", chat_body(user, 12), 200);
  EXPECT_EQ(r["object"], "chat.completion");
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  // Reference: the Generator's greedy tokens for the rendered prompt, decoded in one go.
  const auto& tok = *fixture().tok;
  std::string prompt_text = tokenizer::render_chat({{"user", user, {}}}, tokenizer::ChatFormat::DeepSeekV3);
  std::vector<int32_t> ids;
  for (int id : tok.encode(prompt_text)) ids.push_back(int32_t(id));
  GenerateOptions g;
  g.max_tokens = 12;
  g.stop_at_eos = false;  // the model config's eos id is not this tokenizer's
  g.stop_tokens = {fixture().eos};
  std::vector<int32_t> out = Generator(*fixture().model).generate({ids}, g)[0];
  if (!out.empty() && out.back() == fixture().eos) out.pop_back();
  std::vector<int> out_ids(out.begin(), out.end());
  std::string expected = tok.decode(out_ids);
  if (expected.find("<think>") == std::string::npos && expected == tok.decode(out_ids, true)) {
    EXPECT_EQ(choice["message"]["content"], expected);
  }
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], out.size() + (choice["finish_reason"] == "stop" ? 1 : 0));
  EXPECT_TRUE(r["usage"]["completion_tokens_details"].contains("reasoning_tokens"));
  // Streaming: role first, then deltas whose concatenation is the same text, finish_reason
  // last, usage when asked for, then [DONE].
  json body = chat_body(user, 12);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto res = s.client().Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  auto events = sse_events(res->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text, reasoning;
  for (const auto& e : events)
    for (const auto& c : e["choices"]) {
      text += c["delta"].value("content", "");
      reasoning += c["delta"].value("reasoning_content", "");
    }
  EXPECT_EQ(text, choice["message"]["content"].get<std::string>());
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], choice["finish_reason"]);
  EXPECT_TRUE(events.back()["choices"].empty());
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], r["usage"]["completion_tokens"]);
  // n = 2 with a seed: two choices; the same seed again gives the same texts.
  json two = chat_body(user, 8);
  two["n"] = 2;
  two["temperature"] = 1.0;
  two["seed"] = 5;
  json a = post(s, "/v1/chat/completions", two, 200), b = post(s, "/v1/chat/completions", two, 200);
  ASSERT_EQ(a["choices"].size(), 2u);
  EXPECT_EQ(a["choices"], b["choices"]);
}

TEST(Server, CompletionsModelsHealthAndErrors) {
  serve::ServerOptions o;
  o.limits.max_body_bytes = 4096;
  o.model_name = "tiny";
  Running s(o);
  json c = post(s, "/v1/completions", {{"prompt", "The cat"}, {"max_tokens", 5}, {"temperature", 0}}, 200);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_TRUE(c["choices"][0]["text"].is_string());
  json echoed = post(s, "/v1/completions", {{"prompt", "The cat"}, {"max_tokens", 5}, {"temperature", 0}, {"echo", true}}, 200);
  EXPECT_EQ(echoed["choices"][0]["text"], "The cat" + c["choices"][0]["text"].get<std::string>());
  auto models = s.client().Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  EXPECT_EQ(s.client().Get("/health")->status, 200);
  json nf = json::parse(s.client().Get("/nope")->body);
  EXPECT_TRUE(nf["error"].contains("message"));
  // Malformed JSON, wrong types, unknown role: 400 with OpenAI's error fields.
  auto bad = s.client().Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["type"], "invalid_request_error");
  json e = post(s, "/v1/chat/completions", {{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, 400);
  EXPECT_EQ(e["error"]["param"], "messages");
  // Prompt longer than the context (1024 tokens).
  std::string longtext;
  for (int i = 0; i < 3000; ++i) longtext += "q ";
  serve::ServerOptions big;
  Running s2(big);
  json l = post(s2, "/v1/chat/completions", chat_body(longtext, 4), 400);
  EXPECT_EQ(l["error"]["code"], "context_length_exceeded");
  // The --max-prompt-tokens limit.
  serve::ServerOptions tight;
  tight.generation.max_prompt_tokens = 5;
  Running s3(tight);
  json p = post(s3, "/v1/chat/completions", chat_body("a whale swims in the deep sea", 4), 400);
  EXPECT_EQ(p["error"]["code"], "context_length_exceeded");
  // max_tokens beyond the context.
  json m = post(s, "/v1/chat/completions", chat_body("hi", 5000), 400);
  EXPECT_EQ(m["error"]["code"], "context_length_exceeded");
  // Body over the limit: 413 (httplib's own check and ours both answer in OpenAI's shape).
  auto huge = s.client().Post("/v1/chat/completions", std::string(10000, ' '), "application/json");
  EXPECT_EQ(huge->status, 413);
  EXPECT_TRUE(json::parse(huge->body)["error"].contains("message"));
}

TEST(Server, ApiKey) {
  serve::ServerOptions o;
  o.api_key = "sekret";
  Running s(o);
  json missing = post(s, "/v1/chat/completions", chat_body("hi", 2), 401);
  EXPECT_EQ(missing["error"]["code"], "invalid_api_key");
  post(s, "/v1/chat/completions", chat_body("hi", 2), 401, {{"Authorization", "Bearer wrong"}});
  post(s, "/v1/chat/completions", chat_body("hi", 2), 200, {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(s.client().Get("/v1/models")->status, 401);
  EXPECT_EQ(s.client().Get("/metrics")->status, 401);
  EXPECT_EQ(s.client().Get("/health")->status, 200);
  EXPECT_EQ(s.client().Get("/")->status, 200);  // the page itself; its API calls carry the key
}

TEST(Server, FollowUpTurnReusesThePrefix) {
  Running s({});
  json turn1 = chat_body("A whale swims", 6);
  json r1 = post(s, "/v1/chat/completions", turn1, 200);
  EXPECT_EQ(r1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  json turn2 = turn1;
  turn2["messages"].push_back({{"role", "assistant"}, {"content", r1["choices"][0]["message"]["content"]}});
  turn2["messages"].push_back({{"role", "user"}, {"content", "and then?"}});
  json r2 = post(s, "/v1/chat/completions", turn2, 200);
  // At least the whole first prompt is served from the cache.
  EXPECT_GE(r2["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(),
            r1["usage"]["prompt_tokens"].get<int64_t>());
  std::string metrics = s.client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("whale_prefix_cache_hit_rate 0.5"), std::string::npos) << metrics;
  for (const char* name : {"whale_http_responses_total{path=\"/v1/chat/completions\",status=\"200\"} 2",
                           "whale_queue_depth 0", "whale_tokens_per_second", "whale_kv_cache_usage_ratio",
                           "whale_generation_tokens_total"})
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
}

TEST(Server, DisconnectMidStreamFreesSlotAndCache) {
  EngineOptions eo;
  eo.prefix_reuse = false;
  Running s({}, eo);
  json body = chat_body("A whale", 900);
  body["stream"] = true;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  auto c = s.client();
  auto res = c.send(req);  // the receiver's false closes the connection mid-stream
  EXPECT_GE(chunks, 3);
  EngineMetrics m;
  for (int i = 0; i < 300; ++i) {
    m = s.engine.metrics();
    if (m.running == 0 && m.kv.active_tokens == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.kv.active_tokens, 0);
  EXPECT_EQ(m.cancelled, 1);
  EXPECT_LT(m.generated_tokens, 900);
}
