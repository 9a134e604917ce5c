#include "serve/server.h"

#include <sys/socket.h>

#include <httplib.h>

#include <csignal>
#include <ctime>
#include <type_traits>

#include "core/error.h"
#include "serve/web_assets.h"

namespace whale::serve {

using nlohmann::json;

namespace {

// Text reaching JSON is valid UTF-8 by construction; replacing is the last line of defence.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_json(e)); }

// Runs a handler, turning every exception into an OpenAI-style error response.
template <class F>
void guarded(httplib::Response& res, F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, ApiError(400, "invalid_request_error", e.what()));
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, "server_error", std::string("internal error: ") + e.what()));
  }
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i]) ^ uint8_t(i < b.size() ? b[i] : 0);
  return diff == 0;
}

json tool_calls_json(const std::vector<ParsedToolCall>& calls, int64_t base, const std::string& id_prefix,
                     bool streaming) {
  json out = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    json c = {{"id", id_prefix + "_" + std::to_string(base + int64_t(k))},
              {"type", "function"},
              {"function", {{"name", calls[k].name}, {"arguments", calls[k].arguments}}}};
    if (streaming) c["index"] = base + int64_t(k);
    out.push_back(c);
  }
  return out;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", u.reasoning_tokens}}},
          // DeepSeek's API names for the same cache figures.
          {"prompt_cache_hit_tokens", u.cached_tokens},
          {"prompt_cache_miss_tokens", u.prompt_tokens - u.cached_tokens}};
}

// Per streaming response; owned by the content provider, so it lives as long as the stream.
struct Stream {
  std::unique_ptr<Generation> generation;
  bool chat = true, include_usage = false, started = false;
  std::string id, model;
  std::string echo;  // completions with echo: the prompt, sent first
  int64_t created = 0;
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
};

}  // namespace

Server::Server(Engine& engine, const tokenizer::Tokenizer& tok, ServerOptions options)
    : engine_(engine), tok_(tok), options_(std::move(options)), http_(std::make_unique<httplib::Server>()),
      rng_(options_.seed) {
  const int threads = options_.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  // httplib answers an over-long body itself (413); a little slack lets our parser produce the
  // OpenAI-style error for bodies just over the limit.
  http_->set_payload_max_length(size_t(options_.limits.max_body_bytes) + 1);
  http_->set_read_timeout(30);
  http_->set_write_timeout(30);
  // Debian's compiled cpp-httplib listens with a backlog of 5: 16 clients connecting at once
  // overflowed it, and the dropped handshakes were retried by TCP 1 s and 3 s later (TTFT p99
  // ~3 s in bench_serve). The socket is remembered here and listen() called again after bind
  // with a longer queue (Linux updates a listening socket's backlog).
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket_ = int(sock);
  });
  routes();
}

Server::~Server() { stop(); }

int Server::bind() {
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
    if (port_ <= 0) throw Error(options_.host, "cannot bind any port on this address");
  } else {
    if (!http_->bind_to_port(options_.host, options_.port))
      throw Error(options_.host + ":" + std::to_string(options_.port), "cannot bind (address in use or not local?)");
    port_ = options_.port;
  }
  constexpr int kListenBacklog = 256;
  if (listen_socket_ >= 0) ::listen(listen_socket_, kListenBacklog);
  return port_;
}

void Server::run() {
  // A client that disconnects mid-stream must not kill the server with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  http_->listen_after_bind();
}

void Server::stop() {
  if (http_) http_->stop();
}

uint64_t Server::next_seed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return rng_.next();
}

std::string Server::next_id(const char* prefix) {
  std::lock_guard<std::mutex> lock(mutex_);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)(rng_.next() ^ ++ids_));
  return std::string(prefix) + buf;
}

bool Server::authorized(const httplib::Request& req) const {
  if (options_.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  const std::string bearer = "Bearer ";
  if (h.size() <= bearer.size() || h.compare(0, bearer.size(), bearer) != 0) return false;
  return constant_time_equal(h.substr(bearer.size()), options_.api_key);
}

void Server::routes() {
  auto& h = *http_;
  h.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool protected_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (protected_path && !authorized(req)) {
      send_json(res, 401,
                error_json(ApiError(401, "invalid_request_error",
                                    req.has_header("Authorization") ? "Incorrect API key provided"
                                                                    : "Missing API key: send 'Authorization: Bearer KEY'",
                                    "", "invalid_api_key")));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  h.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    std::string type = "invalid_request_error";
    if (res.status == 404) message = "no route for " + req.method + " " + req.path;
    if (res.status == 413) message = "request body too large";
    if (res.status >= 500) type = "server_error";
    send_json(res, res.status, error_json(ApiError(res.status, type, message)));
    return httplib::Server::HandlerResponse::Handled;
  }));
  // Counted before the response is written (httplib's logger runs after, so a client that had
  // its answer could read /metrics before the count moved: Server.FollowUpTurnReusesThePrefix
  // failed once that way under a loaded suite).
  h.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Known routes only, so clients cannot grow the table with made-up paths.
    static const char* known[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/"};
    std::string path = "other";
    for (const char* k : known)
      if (req.path == k) path = k;
    std::lock_guard<std::mutex> lock(mutex_);
    ++responses_[{path, res.status}];
  });
  h.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat(req, res); });
  h.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completion(req, res); });
  h.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", options_.model_name}, {"object", "model"}, {"created", int64_t(std::time(nullptr))},
                  {"owned_by", "whale"}, {"context_length", engine_.context_length()}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
  h.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  for (const WebFile& f : web_files()) {
    std::string path = "/";
    if (f.path != "index.html") path += f.path;
    h.Get(path, [f](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(f.data), std::string(f.mime).c_str());
    });
  }
}

void Server::chat(const httplib::Request& req, httplib::Response& res) {
  guarded(res, [&] {
    ChatRequest r = parse_chat_request(req.body, options_.limits);
    generate(r, true, res);
  });
}

void Server::completion(const httplib::Request& req, httplib::Response& res) {
  guarded(res, [&] {
    CompletionRequest r = parse_completion_request(req.body, options_.limits);
    generate(r, false, res);
  });
}

template <class Request>
void Server::generate(const Request& request, bool chat, httplib::Response& res) {
  auto gen = std::make_unique<Generation>(engine_, tok_, request, options_.generation, next_seed());
  const std::string id = next_id(chat ? "chatcmpl-" : "cmpl-");
  const std::string model = request.model.empty() ? options_.model_name : request.model;
  const int64_t created = int64_t(std::time(nullptr));
  std::string echo;
  if constexpr (std::is_same_v<Request, CompletionRequest>)
    if (request.echo) echo = request.prompt;
  if (!request.sampling.stream) {
    ++in_flight_;
    std::vector<ChoiceDelta> ignored;
    while (!gen->poll(ignored, std::chrono::milliseconds(200))) ignored.clear();
    --in_flight_;
    json choices = json::array();
    const auto& cs = gen->choices();
    for (size_t i = 0; i < cs.size(); ++i) {
      const auto& c = cs[i];
      json choice = {{"index", i}, {"logprobs", nullptr}, {"finish_reason", c.finish_reason}};
      if (chat) {
        json message = {{"role", "assistant"}, {"content", c.content}};
        message["reasoning_content"] = c.reasoning.empty() ? json(nullptr) : json(c.reasoning);
        if (!c.tool_calls.empty()) {
          message["tool_calls"] = tool_calls_json(c.tool_calls, 0, "call_" + id.substr(9) + "_" + std::to_string(i), false);
          if (c.content.empty()) message["content"] = nullptr;
        }
        choice["message"] = message;
      } else {
        choice["text"] = echo + c.reasoning + c.content;
      }
      choices.push_back(choice);
    }
    send_json(res, 200,
              {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
               {"model", model}, {"system_fingerprint", "whale"}, {"choices", choices}, {"usage", usage_json(gen->usage())}});
    return;
  }
  auto stream = std::make_shared<Stream>();
  stream->generation = std::move(gen);
  stream->chat = chat;
  stream->include_usage = request.sampling.include_usage;
  stream->id = id;
  stream->model = model;
  stream->created = created;
  stream->echo = echo;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++streams_started_;
  }
  ++in_flight_;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t, httplib::DataSink& sink) {
        Stream& s = *stream;
        auto chunk = [&](json choices, json usage) {
          json c = {{"id", s.id}, {"object", s.chat ? "chat.completion.chunk" : "text_completion"},
                    {"created", s.created}, {"model", s.model}, {"system_fingerprint", "whale"},
                    {"choices", std::move(choices)}};
          if (s.include_usage) c["usage"] = std::move(usage);
          return "data: " + dump(c) + "\n\n";
        };
        std::string out;
        if (!s.started && !s.chat && !s.echo.empty()) {
          json choices = json::array();
          for (size_t i = 0; i < s.generation->choices().size(); ++i)
            choices.push_back({{"index", i}, {"text", s.echo}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
          out += chunk(choices, nullptr);
        }
        if (!s.started && s.chat) {
          json choices = json::array();
          for (size_t i = 0; i < s.generation->choices().size(); ++i)
            choices.push_back({{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr}, {"finish_reason", nullptr}});
          out += chunk(choices, nullptr);
        }
        s.started = true;
        std::vector<ChoiceDelta> deltas;
        const bool all = s.generation->poll(deltas, std::chrono::milliseconds(100));
        for (const auto& d : deltas) {
          json choice = {{"index", d.index}, {"logprobs", nullptr},
                         {"finish_reason", d.finish_reason ? json(*d.finish_reason) : json(nullptr)}};
          if (s.chat) {
            json delta = json::object();
            if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
            if (!d.content.empty()) delta["content"] = d.content;
            if (!d.tool_calls.empty())
              delta["tool_calls"] = tool_calls_json(d.tool_calls, d.tool_call_base,
                                                    "call_" + s.id.substr(9) + "_" + std::to_string(d.index), true);
            choice["delta"] = delta;
          } else {
            choice["text"] = d.reasoning + d.content;
          }
          out += chunk(json::array({choice}), nullptr);
        }
        if (all) {
          if (s.include_usage) out += chunk(json::array(), usage_json(s.generation->usage()));
          out += "data: [DONE]\n\n";
        }
        const auto now = std::chrono::steady_clock::now();
        // A comment line now and then, so a vanished client is noticed even while queued.
        if (out.empty() && now - s.last_write > std::chrono::seconds(1)) out = ": keep-alive\n\n";
        if (!out.empty()) {
          if (!sink.write(out.data(), out.size())) {
            s.generation->cancel();
            return false;
          }
          s.last_write = now;
        }
        if (all) sink.done();
        return true;
      },
      [this, stream](bool success) {
        // Runs when the response ends, finished or not: a client gone mid-stream frees its
        // batch slot and cache now.
        stream->generation->cancel();
        --in_flight_;
        if (!success) {
          std::lock_guard<std::mutex> lock(mutex_);
          ++streams_disconnected_;
        }
      });
}

template void Server::generate<ChatRequest>(const ChatRequest&, bool, httplib::Response&);
template void Server::generate<CompletionRequest>(const CompletionRequest&, bool, httplib::Response&);

std::string Server::metrics_text() const {
  const EngineMetrics m = engine_.metrics();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           json(value).dump() + "\n";
  };
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out += "# HELP whale_http_responses_total HTTP responses by path and status.\n"
           "# TYPE whale_http_responses_total counter\n";
    for (const auto& [key, n] : responses_)
      out += "whale_http_responses_total{path=" + dump(json(key.first)) + ",status=\"" + std::to_string(key.second) +
             "\"} " + std::to_string(n) + "\n";
    metric("whale_streams_started_total", "counter", "Streaming responses started.", double(streams_started_));
    metric("whale_streams_disconnected_total", "counter", "Streams whose client went away before the end.",
           double(streams_disconnected_));
  }
  metric("whale_http_in_flight", "gauge", "Requests being answered now.", double(in_flight_.load()));
  metric("whale_sequences_submitted_total", "counter", "Sequences queued (n per request).", double(m.submitted));
  metric("whale_sequences_finished_total", "counter", "Sequences finished, cancelled included.", double(m.finished));
  metric("whale_sequences_cancelled_total", "counter", "Sequences cancelled (client gone or stop string).",
         double(m.cancelled));
  metric("whale_sequences_rejected_total", "counter", "Sequences refused at submission.", double(m.rejected));
  metric("whale_prompt_tokens_total", "counter", "Prompt tokens submitted.", double(m.prompt_tokens));
  metric("whale_prefill_tokens_total", "counter", "Prompt tokens actually run (not served from the prefix cache).",
         double(m.prefill_tokens));
  metric("whale_generation_tokens_total", "counter", "Tokens generated.", double(m.generated_tokens));
  metric("whale_queue_depth", "gauge", "Sequences waiting for a batch slot or KV-cache room.", double(m.queued));
  metric("whale_running_sequences", "gauge", "Sequences in the running batch.", double(m.running));
  metric("whale_engine_steps_total", "counter", "Batched forward steps.", double(m.steps));
  metric("whale_engine_busy_seconds_total", "counter", "Seconds spent in forward passes and sampling.",
         m.busy_seconds);
  metric("whale_tokens_per_second", "gauge", "Generated tokens per second over the last 5 s.",
         m.recent_tokens_per_second);
  metric("whale_kv_cache_budget_tokens", "gauge", "KV-cache budget in tokens.", double(m.kv.budget_tokens));
  metric("whale_kv_cache_active_tokens", "gauge", "KV-cache tokens held by running sequences.",
         double(m.kv.active_tokens));
  metric("whale_kv_cache_prefix_tokens", "gauge", "KV-cache tokens held by kept conversation prefixes.",
         double(m.kv.cached_tokens));
  metric("whale_kv_cache_usage_ratio", "gauge", "Share of the KV-cache budget in use (running + kept).",
         m.kv.budget_tokens > 0 ? double(m.kv.active_tokens + m.kv.cached_tokens) / double(m.kv.budget_tokens) : 0);
  metric("whale_kv_cache_bytes_per_token", "gauge", "Bytes one cached token takes.", double(m.kv_bytes_per_token));
  metric("whale_prefix_cache_lookups_total", "counter", "Admissions that looked for a reusable prefix.",
         double(m.kv.lookups));
  metric("whale_prefix_cache_hits_total", "counter", "Admissions that reused a cached prefix.", double(m.kv.hits));
  metric("whale_prefix_cache_hit_rate", "gauge", "Hits / lookups.",
         m.kv.lookups > 0 ? double(m.kv.hits) / double(m.kv.lookups) : 0);
  metric("whale_prefix_cache_reused_tokens_total", "counter", "Prompt tokens served from cached prefixes.",
         double(m.kv.reused_tokens));
  metric("whale_prefix_cache_token_hit_rate", "gauge", "Reused prompt tokens / prompt tokens admitted.",
         m.kv.prompt_tokens > 0 ? double(m.kv.reused_tokens) / double(m.kv.prompt_tokens) : 0);
  return out;
}

}  // namespace whale::serve
