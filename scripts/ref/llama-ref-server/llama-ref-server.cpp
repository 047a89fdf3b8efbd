// llama-ref-server: a minimal stand-in for llama.cpp's llama-server, built from
// the llama.cpp *library* sources vendored in the llama-cpp-sys-2 crate (which
// does not ship tools/server). It exposes the subset of the llama-server HTTP
// API that scripts/ref/make_llama_fixtures.py uses, with the same request and
// response field names, implemented with the same common/ helpers as
// llama-server:
//
//   GET  /health          -> {"status":"ok"}
//   GET  /props           -> build info, model path, n_ctx, chat template, eog tokens...
//   POST /tokenize        {content, add_special=false, parse_special=true, with_pieces=false}
//                         -> {"tokens":[ids]}      (common_tokenize)
//   POST /detokenize      {tokens} -> {"content"}  (concat of common_token_to_piece(special=true))
//   POST /apply-template  {messages, add_generation_prompt=true, chat_template_kwargs, tools,
//                          tool_choice, parallel_tool_calls, reasoning_format}
//                         -> {"prompt", "generation_prompt", "format"}
//                                                  (common_chat_templates_apply, jinja)
//   POST /parse           the /apply-template body + {text}: `text` (a whole model reply)
//                         parsed as llama-server parses replies to that request
//                         -> {"format", "message"} (common_chat_parse; OpenAI message)
//   POST /completion      {prompt, n_predict, temperature, top_k, top_p, min_p, seed,
//                          repeat_penalty, return_tokens, cache_prompt(ignored)}
//                         -> {content, tokens, stop, stop_type, stopping_word,
//                             tokens_predicted, tokens_evaluated, prompt_tokens, timings}
//
// Command line: the llama-server one (parsed with common_params_parse for
// LLAMA_EXAMPLE_SERVER), e.g. -m model.gguf --host 127.0.0.1 --port 8080 -t 2 -c 4096 --jinja
//
// Generation mirrors llama-server for a single request: prompt tokenized with
// add_special=true, parse_special=true; decoded in n_batch chunks (logits of the
// last prompt token only); then one token per llama_decode; sampling through
// common_sampler (temperature <= 0 => greedy); the sampled token is appended to
// `tokens` *before* the stop checks, so an EOG token ends the list when
// stop_type == "eos"; `content` is the concatenation of
// common_token_to_piece(token, special=false) of the non-EOG tokens.

#include "arg.h"
#include "build-info.h"
#include "chat.h"
#include "common.h"
#include "json.h"
#include "log.h"
#include "llama.h"
#include "sampling.h"

#include <cpp-httplib/httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef BLOCKSPEC_SRC_DESC
#define BLOCKSPEC_SRC_DESC "unknown llama.cpp tree"
#endif

using json = nlohmann::ordered_json;

namespace {

struct ref_state {
    common_params                 params;
    common_init_result_ptr        init;
    llama_model *                 model = nullptr;
    llama_context *               ctx   = nullptr;
    const llama_vocab *           vocab = nullptr;
    common_chat_templates_ptr     tmpls;
    std::mutex                    mtx;
};

ref_state * g_state  = nullptr;
httplib::Server * g_svr = nullptr;

std::string dump(const json & j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_json(httplib::Response & res, const json & j, int status = 200) {
    res.status = status;
    res.set_content(dump(j), "application/json; charset=utf-8");
}

void send_error(httplib::Response & res, const std::string & msg, int status = 400) {
    const char * type = status == 400 ? "invalid_request_error" : "server_error";
    send_json(res, json{{"error", json{{"code", status}, {"message", msg}, {"type", type}}}}, status);
}

bool is_valid_utf8(const std::string & s) {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        const unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        if (len == 0 || i + len > n) {
            return false;
        }
        for (size_t k = 1; k < len; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) {
                return false;
            }
        }
        i += len;
    }
    return true;
}

json piece_json(const std::string & piece) {
    if (is_valid_utf8(piece)) {
        return piece;
    }
    json bytes = json::array();
    for (unsigned char c : piece) {
        bytes.push_back(static_cast<int>(c));
    }
    return bytes;
}

template <typename T> T jv(const json & body, const char * key, const T & def) {
    if (body.contains(key) && !body.at(key).is_null()) {
        return body.at(key).get<T>();
    }
    return def;
}

std::vector<llama_token> eog_tokens(const llama_vocab * vocab) {
    std::vector<llama_token> out;
    const int n = llama_vocab_n_tokens(vocab);
    for (llama_token t = 0; t < n; ++t) {
        if (llama_vocab_is_eog(vocab, t)) {
            out.push_back(t);
        }
    }
    return out;
}

std::string meta(const llama_model * model, const char * key) {
    char buf[512];
    const int n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf);
}

// ---------------------------------------------------------------------------------------------

void handle_props(const httplib::Request &, httplib::Response & res) {
    auto & st = *g_state;
    json eog = json::array();
    for (auto t : eog_tokens(st.vocab)) {
        eog.push_back(json{{"id", t}, {"piece", piece_json(common_token_to_piece(st.vocab, t, true))}});
    }
    int32_t n_sup = 0;
    const llama_token * sup = llama_vocab_get_suppress_tokens(st.vocab, &n_sup);
    json suppress = json::array();
    for (int32_t i = 0; i < n_sup; ++i) {
        suppress.push_back(sup[i]);
    }
    char desc[256];
    llama_model_desc(st.model, desc, sizeof(desc));
    const auto & sp = st.params.sampling;
    send_json(res, json{
        {"build_info",     llama_build_info()},
        {"llama_version",  llama_version()},
        {"source",         BLOCKSPEC_SRC_DESC},
        {"server",         "llama-ref-server"},
        {"model_path",     st.params.model.path},
        {"model_desc",     desc},
        {"model_name",     meta(st.model, "general.name")},
        {"n_ctx",          llama_n_ctx(st.ctx)},
        {"n_ctx_train",    llama_model_n_ctx_train(st.model)},
        {"n_batch",        llama_n_batch(st.ctx)},
        {"n_ubatch",       llama_n_ubatch(st.ctx)},
        {"n_seq_max",      llama_n_seq_max(st.ctx)},
        {"n_threads",      st.params.cpuparams.n_threads},
        {"n_threads_batch", st.params.cpuparams_batch.n_threads},
        {"flash_attn_type", llama_flash_attn_type_name(st.params.flash_attn_type)},
        {"cache_type_k",   ggml_type_name(st.params.cache_type_k)},
        {"cache_type_v",   ggml_type_name(st.params.cache_type_v)},
        {"model_n_params", llama_model_n_params(st.model)},
        {"kv_unified",     st.params.kv_unified},
        {"n_vocab",        llama_vocab_n_tokens(st.vocab)},
        {"add_bos",        llama_vocab_get_add_bos(st.vocab)},
        {"add_eos",        llama_vocab_get_add_eos(st.vocab)},
        {"bos_token",      llama_vocab_bos(st.vocab)},
        {"eos_token",      llama_vocab_eos(st.vocab)},
        {"eog_tokens",     eog},
        {"suppress_tokens", suppress},
        {"use_jinja",      st.params.use_jinja},
        {"chat_template",  st.tmpls ? common_chat_templates_source(st.tmpls.get()) : std::string()},
        {"default_sampling", json{{"temp", sp.temp}, {"top_k", sp.top_k}, {"top_p", sp.top_p}, {"min_p", sp.min_p},
                                  {"seed", sp.seed}, {"penalty_repeat", sp.penalty_repeat}}},
        {"system_info",    llama_print_system_info()},
    });
}

void handle_tokenize(const httplib::Request & req, httplib::Response & res) {
    auto & st = *g_state;
    const json body = json::parse(req.body);
    json tokens = json::array();
    if (body.contains("content")) {
        const bool add_special   = jv<bool>(body, "add_special",   false);
        const bool parse_special = jv<bool>(body, "parse_special", true);
        const bool with_pieces   = jv<bool>(body, "with_pieces",   false);
        const auto ids = common_tokenize(st.vocab, body.at("content").get<std::string>(), add_special, parse_special);
        for (auto t : ids) {
            if (with_pieces) {
                tokens.push_back(json{{"id", t}, {"piece", piece_json(common_token_to_piece(st.vocab, t, true))}});
            } else {
                tokens.push_back(t);
            }
        }
    }
    send_json(res, json{{"tokens", tokens}});
}

void handle_detokenize(const httplib::Request & req, httplib::Response & res) {
    auto & st = *g_state;
    const json body = json::parse(req.body);
    std::string content;
    if (body.contains("tokens")) {
        const int n_vocab = llama_vocab_n_tokens(st.vocab);
        for (const auto & t : body.at("tokens")) {
            const llama_token id = t.get<llama_token>();
            if (id < 0 || id >= n_vocab) {
                return send_error(res, "token id out of range: " + std::to_string(id));
            }
            content += common_token_to_piece(st.vocab, id, true);
        }
    }
    send_json(res, json{{"content", content}});
}

// The template inputs of an /apply-template or /parse request, read as llama-server reads a chat
// request: messages, tools, tool_choice, parallel_tool_calls, chat_template_kwargs (whose
// "enable_thinking" also sets inputs.enable_thinking, as llama-server's
// oaicompat_chat_params_parse does) and reasoning_format.
common_chat_templates_inputs template_inputs(const json & body) {
    auto & st = *g_state;
    if (!body.contains("messages") || !body.at("messages").is_array()) {
        throw std::invalid_argument("'messages' must be an array");
    }
    common_chat_templates_inputs inputs;
    inputs.messages              = common_chat_msgs_parse_oaicompat(common_json::parse(body.at("messages").dump()));
    inputs.use_jinja             = st.params.use_jinja;
    inputs.add_generation_prompt = jv<bool>(body, "add_generation_prompt", true);
    inputs.reasoning_format      = st.params.reasoning_format;
    if (body.contains("reasoning_format") && body.at("reasoning_format").is_string()) {
        inputs.reasoning_format = common_reasoning_format_from_name(body.at("reasoning_format").get<std::string>());
    }
    if (body.contains("tools") && !body.at("tools").is_null()) {
        inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(body.at("tools").dump()));
    }
    if (body.contains("tool_choice") && body.at("tool_choice").is_string()) {
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(body.at("tool_choice").get<std::string>());
    }
    inputs.parallel_tool_calls  = jv<bool>(body, "parallel_tool_calls", false);
    inputs.chat_template_kwargs = st.params.default_template_kwargs;
    if (body.contains("chat_template_kwargs")) {
        for (const auto & [k, v] : body.at("chat_template_kwargs").items()) {
            inputs.chat_template_kwargs[k] = v.dump();
        }
    }
    const auto it = inputs.chat_template_kwargs.find("enable_thinking");
    if (it != inputs.chat_template_kwargs.end()) {
        if (it->second == "true") {
            inputs.enable_thinking = true;
        } else if (it->second == "false") {
            inputs.enable_thinking = false;
        }
    }
    inputs.add_bos = llama_vocab_get_add_bos(st.vocab);
    inputs.add_eos = llama_vocab_get_add_eos(st.vocab);
    return inputs;
}

void handle_apply_template(const httplib::Request & req, httplib::Response & res) {
    auto & st = *g_state;
    const json body = json::parse(req.body);
    const auto chat = common_chat_templates_apply(st.tmpls.get(), template_inputs(body));
    send_json(res, json{
        {"prompt",            chat.prompt},
        {"generation_prompt", chat.generation_prompt},
        {"format",            common_chat_format_name(chat.format)},
    });
}

// llama-server's reply parsing: the request's template inputs give the parser
// (common_chat_templates_apply), which then parses `text`, the model's whole reply
// (common_chat_parse, not partial); the message comes back in OpenAI form.
void handle_parse(const httplib::Request & req, httplib::Response & res) {
    auto & st = *g_state;
    const json body = json::parse(req.body);
    if (!body.contains("text") || !body.at("text").is_string()) {
        return send_error(res, "'text' must be a string");
    }
    const auto inputs = template_inputs(body);
    const auto chat   = common_chat_templates_apply(st.tmpls.get(), inputs);
    common_chat_parser_params pp(chat);
    pp.reasoning_format = inputs.reasoning_format;
    if (!chat.parser.empty()) {
        pp.parser.load(chat.parser);
    }
    const auto msg = common_chat_parse(body.at("text").get<std::string>(), false, pp);
    send_json(res, json{
        {"format",  common_chat_format_name(chat.format)},
        {"message", json::parse(msg.to_json_oaicompat().dump())},
    });
}

void handle_completion(const httplib::Request & req, httplib::Response & res) {
    auto & st = *g_state;
    const json body = json::parse(req.body);
    if (!body.contains("prompt")) {
        return send_error(res, "missing 'prompt'");
    }

    std::vector<llama_token> prompt;
    const json & jp = body.at("prompt");
    if (jp.is_string()) {
        prompt = common_tokenize(st.vocab, jp.get<std::string>(), /*add_special*/ true, /*parse_special*/ true);
    } else if (jp.is_array()) {
        for (const auto & t : jp) {
            prompt.push_back(t.get<llama_token>());
        }
    } else {
        return send_error(res, "'prompt' must be a string or an array of token ids");
    }
    const int n_ctx = llama_n_ctx(st.ctx);
    if (prompt.empty()) {
        return send_error(res, "empty prompt");
    }

    common_params_sampling sp = st.params.sampling;
    sp.temp           = jv<float>(body, "temperature", sp.temp);
    sp.top_k          = jv<int32_t>(body, "top_k", sp.top_k);
    sp.top_p          = jv<float>(body, "top_p", sp.top_p);
    sp.min_p          = jv<float>(body, "min_p", sp.min_p);
    sp.penalty_repeat = jv<float>(body, "repeat_penalty", sp.penalty_repeat);
    sp.seed           = jv<uint32_t>(body, "seed", sp.seed);
    int n_predict     = jv<int>(body, "n_predict", st.params.n_predict);
    const bool return_tokens = jv<bool>(body, "return_tokens", false);
    if (n_predict < 0) {
        n_predict = n_ctx;
    }
    if ((int) prompt.size() + n_predict > n_ctx) {
        return send_error(res, "prompt + n_predict exceeds the context size");
    }

    const auto t0 = std::chrono::steady_clock::now();
    llama_memory_clear(llama_get_memory(st.ctx), true);

    const int n_batch = llama_n_batch(st.ctx);
    llama_batch batch = llama_batch_init(std::max<int>(n_batch, 1), 0, 1);
    auto batch_add = [&](llama_token id, llama_pos pos, bool logits) {
        batch.token   [batch.n_tokens]    = id;
        batch.pos     [batch.n_tokens]    = pos;
        batch.n_seq_id[batch.n_tokens]    = 1;
        batch.seq_id  [batch.n_tokens][0] = 0;
        batch.logits  [batch.n_tokens]    = logits;
        batch.n_tokens++;
    };

    for (size_t i = 0; i < prompt.size(); i += n_batch) {
        batch.n_tokens = 0;
        const size_t end = std::min(prompt.size(), i + (size_t) n_batch);
        for (size_t k = i; k < end; ++k) {
            batch_add(prompt[k], (llama_pos) k, k + 1 == prompt.size());
        }
        if (llama_decode(st.ctx, batch) != 0) {
            llama_batch_free(batch);
            return send_error(res, "llama_decode failed on the prompt", 500);
        }
    }
    const auto t1 = std::chrono::steady_clock::now();

    common_sampler * smpl = common_sampler_init(st.model, sp);
    for (auto t : prompt) {
        common_sampler_accept(smpl, t, false);
    }

    std::vector<llama_token> out;
    std::string text;
    std::string stop_type = "none";
    llama_pos pos = (llama_pos) prompt.size();
    for (int n = 0; n < n_predict; ++n) {
        const llama_token id = common_sampler_sample(smpl, st.ctx, -1);
        common_sampler_accept(smpl, id, true);
        out.push_back(id);
        if (llama_vocab_is_eog(st.vocab, id)) {
            stop_type = "eos";
            break;
        }
        text += common_token_to_piece(st.vocab, id, st.params.special);
        if ((int) out.size() >= n_predict) {
            stop_type = "limit";
            break;
        }
        batch.n_tokens = 0;
        batch_add(id, pos++, true);
        if (llama_decode(st.ctx, batch) != 0) {
            common_sampler_free(smpl);
            llama_batch_free(batch);
            return send_error(res, "llama_decode failed during generation", 500);
        }
    }
    const auto t2 = std::chrono::steady_clock::now();
    common_sampler_free(smpl);
    llama_batch_free(batch);

    const double prompt_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    const double pred_ms   = std::chrono::duration<double, std::milli>(t2 - t1).count();
    json prompt_tokens = json::array();
    for (auto t : prompt) {
        prompt_tokens.push_back(t);
    }
    json tokens = json::array();
    if (return_tokens) {
        for (auto t : out) {
            tokens.push_back(t);
        }
    }
    send_json(res, json{
        {"content",          text},
        {"tokens",           tokens},
        {"stop",             true},
        {"stop_type",        stop_type},
        {"stopping_word",    ""},
        {"tokens_predicted", (int) out.size()},
        {"tokens_evaluated", (int) prompt.size()},
        {"prompt_tokens",    prompt_tokens},
        {"generation_settings", json{{"n_predict", n_predict}, {"temperature", sp.temp}, {"top_k", sp.top_k},
                                     {"top_p", sp.top_p}, {"min_p", sp.min_p}, {"seed", sp.seed},
                                     {"repeat_penalty", sp.penalty_repeat}}},
        {"timings", json{{"prompt_n", (int) prompt.size()}, {"prompt_ms", prompt_ms},
                         {"predicted_n", (int) out.size()}, {"predicted_ms", pred_ms}}},
    });
}

using handler_t = void (*)(const httplib::Request &, httplib::Response &);

httplib::Server::Handler locked(handler_t h) {
    return [h](const httplib::Request & req, httplib::Response & res) {
        std::lock_guard<std::mutex> lock(g_state->mtx);
        try {
            h(req, res);
        } catch (const std::exception & e) {
            send_error(res, e.what(), 400);
        }
    };
}

void on_signal(int) {
    if (g_svr) {
        g_svr->stop();
    }
}

} // namespace

int main(int argc, char ** argv) {
    ref_state st;
    g_state = &st;
    if (!common_params_parse(argc, argv, st.params, LLAMA_EXAMPLE_SERVER)) {
        return 1;
    }
    common_init();
    // llama-server's "auto" slot count: 4 slots sharing one unified KV cache of n_ctx cells;
    // this server only ever uses sequence 0 (one request at a time)
    if (st.params.n_parallel < 0) {
        st.params.n_parallel = 4;
        st.params.kv_unified = true;
    }
    if (st.params.model.path.empty()) {
        fprintf(stderr, "error: -m <model.gguf> is required\n");
        return 1;
    }
    LOG_INF("llama-ref-server: %s\n", BLOCKSPEC_SRC_DESC);
    LOG_INF("build: %s (llama %s)\n", llama_build_info(), llama_version());

    llama_backend_init();
    llama_numa_init(st.params.numa);

    st.init = common_init_from_params(st.params);
    st.model = st.init->model();
    st.ctx   = st.init->context();
    if (st.model == nullptr || st.ctx == nullptr) {
        fprintf(stderr, "error: failed to load model %s\n", st.params.model.path.c_str());
        return 1;
    }
    st.vocab = llama_model_get_vocab(st.model);
    st.tmpls = common_chat_templates_init(st.model, st.params.chat_template);
    LOG_INF("system_info: %s\n", llama_print_system_info());

    httplib::Server svr;
    g_svr = &svr;
    svr.Get("/health", [](const httplib::Request &, httplib::Response & res) { send_json(res, json{{"status", "ok"}}); });
    svr.Get("/props", locked(handle_props));
    svr.Post("/tokenize", locked(handle_tokenize));
    svr.Post("/detokenize", locked(handle_detokenize));
    svr.Post("/apply-template", locked(handle_apply_template));
    svr.Post("/parse", locked(handle_parse));
    svr.Post("/completion", locked(handle_completion));
    svr.Post("/completions", locked(handle_completion));

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    const std::string host = st.params.hostnames.empty() ? "127.0.0.1" : st.params.hostnames[0];
    if (!svr.bind_to_port(host, st.params.port)) {
        fprintf(stderr, "error: could not bind to %s:%d\n", host.c_str(), st.params.port);
        return 1;
    }
    LOG_INF("server listening on http://%s:%d\n", host.c_str(), st.params.port);
    svr.listen_after_bind();
    LOG_INF("shutting down\n");
    g_svr = nullptr;
    return 0;
}
