#!/usr/bin/env python3
"""llama.cpp reference fixture for the Qwen3.5 chat template: renderings and reply parsing.

The template is llama.cpp's models/templates/Qwen3.5-4B.jinja (Qwen3.5's own template, as
llama.cpp's repository carries it; the sha256 below pins the version these fixtures were made
with). It is not in this repository: pass it with --template, or put it in
$BLOCKSPEC_TEMPLATES (default: shared/templates/ beside the repository when it is there, else
~/.cache/blockspec/templates/).

The reference server (llama-ref-server from scripts/ref/build-llama.sh, with /apply-template
taking tools and the /parse endpoint) runs on the Qwen2.5-Coder-0.5B GGUF, whose vocabulary has
the same ChatML special tokens, with `--jinja --chat-template-file <template>`:

  render cases  POST /apply-template {messages, tools, chat_template_kwargs,
                add_generation_prompt}: the prompt llama-server would build (tools offered,
                thinking on and off, assistant tool calls, tool results, reasoning in history,
                typed content); `error` when llama.cpp refuses the conversation. The same cases
                are also rendered with tests/fixtures/templates/xml_tools.jinja, a hand-written
                template of the same family that is in the repository, and with Qwen3.6's
                template, which is Qwen3.5's with the two changes in QWEN36_CHANGES
                (`template` names the one);
  parse cases   POST /parse {messages, tools, chat_template_kwargs, parallel_tool_calls, text}:
                how llama-server splits a Qwen3.5 reply `text` into reasoning, content and
                tool calls (llama.cpp's Qwen3-Coder XML format:
                <tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nVALUE\\n</parameter>\\n...).

Output: tests/fixtures/llama/chat-qwen3.5.json, checked by crates/blockspec/tests/chat_qwen35.rs.
Needs $LLAMA_SERVER (or $BLOCKSPEC_LLAMA_REF's build) to be a llama-ref-server with /parse.
Python 3.11 stdlib only; loopback traffic only.

Usage: scripts/ref/make_qwen35_chat_fixture.py [--template PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import make_llama_fixtures as mlf  # same folder
from llama_server import http

TEMPLATE_NAME = "Qwen3.5-4B.jinja"
TEMPLATE_SHA256 = "a4aee8afcf2e0711942cf848899be66016f8d14a889ff9ede07bca099c28f715"
TEMPLATE_SOURCE = ("llama.cpp repository, models/templates/Qwen3.5-4B.jinja as added in commit "
                   "98ae0a0d3600f08fbd8d938bc8de0436755e50c3 (2026-03-28, #21128)")
_SHARED = mlf.REPO.parent / "shared" / "templates"
TEMPLATES_DIR = Path(os.environ.get("BLOCKSPEC_TEMPLATES") or
                     (_SHARED if (_SHARED / TEMPLATE_NAME).is_file() else
                      mlf.HOME / ".cache/blockspec/templates"))
OUT = mlf.FIXTURES / "chat-qwen3.5.json"
# Qwen3.6's template is Qwen3.5's with two lines changed: reasoning of earlier turns is kept
# when the `preserve_thinking` kwarg is true, and tool call arguments that are not strings are
# written as JSON (booleans as true/false, not True/False). Its render cases use the Qwen3.5
# file with these replacements (recorded in the fixture, so the test derives the same text).
QWEN36_NAME = "Qwen3.6 (Qwen3.5-4B.jinja with the Qwen3.6 changes)"
QWEN36_CHANGES = [
    ("{%- if loop.index0 > ns.last_query_index %}",
     "{%- if (preserve_thinking is defined and preserve_thinking is true) or "
     "(loop.index0 > ns.last_query_index) %}"),
    ("{%- set args_value = args_value | tojson | safe if args_value is mapping or (args_value is sequence "
     "and args_value is not string) else args_value | string %}",
     "{%- set args_value = args_value | string if args_value is string else args_value | tojson | safe %}"),
]
# A hand-written template of the same family, in the repository: its render cases run everywhere.
LOOKALIKE = mlf.REPO / "tests" / "fixtures" / "templates" / "xml_tools.jinja"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}},
        "required": ["city"]}}}
PYTHON = {"type": "function", "function": {
    "name": "python", "description": "Run Python code",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}
TYPED = {"type": "function", "function": {
    "name": "set_options", "description": "Arguments of every JSON type",
    "parameters": {"type": "object", "properties": {
        "count": {"type": "integer"}, "ratio": {"type": "number"}, "enabled": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "config": {"type": "object"}, "label": {"type": "string"},
        "maybe": {"type": ["integer", "string"]}, "nothing": {"type": "null"}},
        "required": ["count"]}}}
NO_ARGS = {"type": "function", "function": {
    "name": "get_time", "description": "The current time", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, PYTHON]

SYS = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is the weather like in Paris?"}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}
CALL2 = {"id": "call_2", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Lyon\", \"unit\": \"celsius\"}"}}
TYPED_CALL = {"id": "call_3", "type": "function", "function": {"name": "set_options", "arguments": json.dumps(
    {"count": 3, "ratio": 0.25, "enabled": True, "tags": ["a", "b"], "config": {"k": [1, 2], "s": "é"},
     "label": "multi\nline \"quoted\"", "nothing": None})}}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18, \"sky\": \"cloudy\"}"}
RESULT2 = {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp_c\": 21}"}
OFF = {"enable_thinking": False}

RENDER_CASES = [
    ("system_user", [SYS, USER], None, None, True),
    ("system_user/thinking_off", [SYS, USER], None, OFF, True),
    ("user_only", [USER], None, None, True),
    ("user_only/thinking_off", [USER], None, OFF, True),
    ("no_generation_prompt", [SYS, USER, {"role": "assistant", "content": "It is sunny."}], None, None, False),
    ("multi_turn", [SYS, USER, {"role": "assistant", "content": "It is sunny."},
                    {"role": "user", "content": "And tomorrow?"}], None, None, True),
    ("multi_turn/thinking_off", [SYS, USER, {"role": "assistant", "content": "It is sunny."},
                                 {"role": "user", "content": "And tomorrow?"}], None, OFF, True),
    ("history_reasoning_content", [USER, {"role": "assistant", "content": "It is sunny.",
                                          "reasoning_content": "Recall the forecast."},
                                   {"role": "user", "content": "Thanks!"}], None, None, True),
    ("history_inline_think", [USER, {"role": "assistant", "content": "<think>\nRecall.\n</think>\n\nIt is sunny."},
                              {"role": "user", "content": "Thanks!"}], None, None, True),
    ("last_assistant_reasoning", [USER, {"role": "assistant", "content": "It is sunny.",
                                         "reasoning_content": "Recall the forecast."}], None, None, False),
    ("tools_offered", [SYS, USER], TOOLS, None, True),
    ("tools_offered/no_system", [USER], TOOLS, None, True),
    ("tools_offered/thinking_off", [SYS, USER], TOOLS, OFF, True),
    ("tools_offered/typed_and_no_args", [USER], [TYPED, NO_ARGS], None, True),
    ("tool_call_and_result", [SYS, USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}, RESULT],
     TOOLS, None, True),
    ("tool_call_and_result/thinking_off", [SYS, USER, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                                           RESULT], TOOLS, OFF, True),
    ("tool_call_with_content_and_reasoning", [USER, {"role": "assistant", "content": "Let me check.",
                                                     "reasoning_content": "Need the weather tool.",
                                                     "tool_calls": [CALL]}, RESULT], TOOLS, None, True),
    ("parallel_tool_calls", [USER, {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
                             RESULT, RESULT2], TOOLS, None, True),
    ("tool_round_then_answer", [SYS, USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}, RESULT,
                                {"role": "assistant", "content": "It is 18 °C and cloudy."},
                                {"role": "user", "content": "And in Lyon?"}], TOOLS, None, True),
    ("typed_arguments", [{"role": "user", "content": "Configure it."},
                         {"role": "assistant", "content": "", "tool_calls": [TYPED_CALL]},
                         {"role": "tool", "tool_call_id": "call_3", "content": "ok"}], [TYPED], None, True),
    ("typed_content_parts", [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                             {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                          {"type": "text", "text": " there"}]}], None, None, True),
    ("whitespace_trimmed", [{"role": "system", "content": "  padded system \n"},
                            {"role": "user", "content": "\n  padded user  \n"}], None, None, True),
    ("developer_role", [{"role": "developer", "content": "Dev rules."}, USER], None, None, True),
    ("history_reasoning_content/preserve_thinking",
     [USER, {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Recall the forecast."},
      {"role": "user", "content": "Thanks!"}], None, {"preserve_thinking": True}, True),
    ("history_reasoning_content/preserve_reasoning",
     [USER, {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Recall the forecast."},
      {"role": "user", "content": "Thanks!"}], None, {"preserve_reasoning": True}, True),
    ("no_user_message", [SYS], None, None, True),
    ("system_not_first", [USER, SYS], None, None, True),
]

Q = [SYS, USER]
PARSE_CASES = [
    ("thinking", Q, TOOLS, None, False, "The user asks about Paris.\n</think>\n\nIt is sunny in Paris."),
    ("thinking/no_tools", Q, None, None, False, "Short thought.\n</think>\n\nHello!"),
    ("thinking_off", Q, TOOLS, OFF, False, "It is sunny in Paris."),
    ("tool_call", Q, TOOLS, None, False,
     "I should call the tool.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
     "</parameter>\n</function>\n</tool_call>"),
    ("tool_call/thinking_off", Q, TOOLS, OFF, False,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
     "</parameter>\n</function>\n</tool_call>"),
    ("content_then_tool_call", Q, TOOLS, OFF, False,
     "Let me look that up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>"),
    ("parallel_tool_calls", Q, TOOLS, OFF, True,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nLyon\n</parameter>\n</function>\n</tool_call>"),
    ("multiline_string_argument", Q, TOOLS, OFF, False,
     "<tool_call>\n<function=python>\n<parameter=code>\ndef hello():\n    print(\"Hello, world!\")\n\nhello()\n"
     "</parameter>\n</function>\n</tool_call>"),
    ("typed_arguments", Q, [TYPED], OFF, False,
     "<tool_call>\n<function=set_options>\n<parameter=count>\n3\n</parameter>\n<parameter=ratio>\n0.25\n"
     "</parameter>\n<parameter=enabled>\ntrue\n</parameter>\n<parameter=tags>\n[\"a\", \"b\"]\n</parameter>\n"
     "<parameter=config>\n{\"k\": [1, 2]}\n</parameter>\n<parameter=label>\n42\n</parameter>\n"
     "<parameter=maybe>\n7\n</parameter>\n</function>\n</tool_call>"),
    ("union_type_string_value", Q, [TYPED], OFF, False,
     "<tool_call>\n<function=set_options>\n<parameter=count>\n1\n</parameter>\n<parameter=maybe>\nseven\n"
     "</parameter>\n</function>\n</tool_call>"),
    ("no_arguments", Q, [NO_ARGS], OFF, False,
     "<tool_call>\n<function=get_time>\n</function>\n</tool_call>"),
    ("reasoning_ends_at_tool_call", Q, TOOLS, None, False,
     "Thinking without a close tag <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
     "</parameter>\n</function>\n</tool_call>"),
    ("tool_call_trailing_newline", Q, TOOLS, OFF, False,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"),
    ("no_tool_call_with_tools", Q, TOOLS, None, False, "Hmm.\n</think>\n\nI cannot check the weather."),
]


def template_path(arg: str | None) -> Path:
    p = Path(arg) if arg else TEMPLATES_DIR / TEMPLATE_NAME
    if not p.is_file():
        sys.exit(f"missing {p}: the Qwen3.5 template ({TEMPLATE_SOURCE}); pass --template")
    if mlf.sha256_file(p) != TEMPLATE_SHA256:
        sys.exit(f"{p}: sha256 is not {TEMPLATE_SHA256}")
    return p


def render_cases(srv, template: str) -> list[dict]:
    out = []
    for name, messages, tools, kwargs, agp in RENDER_CASES:
        body = {**request(messages, tools, kwargs), "add_generation_prompt": agp}
        case = {"name": name, "kind": "render", "template": template, **body}
        try:
            r = http(srv.base, "/apply-template", body)
            case.update(rendered=r["prompt"], generation_prompt=r["generation_prompt"], format=r["format"])
        except RuntimeError as e:
            case["error"] = str(e)
        out.append(case)
        print(f"    {template} {name}: {'error' if 'error' in case else len(case['rendered'])}", file=sys.stderr)
    return out


def request(messages, tools, kwargs) -> dict:
    body = {"messages": messages}
    if tools is not None:
        body["tools"] = tools
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    return body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", help=f"the template file (default $BLOCKSPEC_TEMPLATES/{TEMPLATE_NAME})")
    args = ap.parse_args()
    tmpl = template_path(args.template)
    fname, sha = mlf.MODELS["qwen05"]
    model = mlf.MODELS_DIR / fname
    if not model.is_file():
        sys.exit(f"missing {model}; run scripts/fetch-models.sh")
    binary = mlf.find_server()
    version = mlf.server_version(binary)
    print(f"server: {binary}\n{version}", file=sys.stderr)
    cases = []
    with mlf.Server(binary, model, ["--chat-template-file", str(LOOKALIKE)]) as srv:
        cases += render_cases(srv, LOOKALIKE.name)
    with tempfile.TemporaryDirectory(prefix="qwen36-") as tmp:
        src = tmpl.read_text(encoding="utf-8")
        for old, new in QWEN36_CHANGES:
            if src.count(old) != 1:
                sys.exit(f"{tmpl}: the Qwen3.6 change {old!r} does not apply")
            src = src.replace(old, new)
        q36 = Path(tmp) / "qwen3.6.jinja"
        q36.write_text(src, encoding="utf-8")
        with mlf.Server(binary, model, ["--chat-template-file", str(q36)]) as srv:
            cases += render_cases(srv, QWEN36_NAME)
    with mlf.Server(binary, model, ["--chat-template-file", str(tmpl)]) as srv:
        props = http(srv.base, "/props")
        meta = mlf.common_meta("chat", "qwen05", model, binary, version, srv, props)
        meta["llama_cpp"]["server_cmd"] = meta["llama_cpp"]["server_cmd"].replace(str(tmpl), "<template>")
        cases += render_cases(srv, TEMPLATE_NAME)
        for name, messages, tools, kwargs, parallel, text in PARSE_CASES:
            body = {**request(messages, tools, kwargs), "parallel_tool_calls": parallel, "text": text}
            r = http(srv.base, "/parse", body)
            cases.append({"name": name, "kind": "parse", **body, "format": r["format"], "message": r["message"]})
            print(f"    parse {name}: {json.dumps(r['message'], ensure_ascii=False)[:100]}", file=sys.stderr)
    meta["generated_by"] = "scripts/ref/make_qwen35_chat_fixture.py"
    meta["llama_cpp"]["server_source"] = ("scripts/ref/llama-ref-server/llama-ref-server.cpp with /parse and tools "
                                          "in /apply-template, linked against the libraries build-llama.sh builds")
    meta["template"] = {"name": TEMPLATE_NAME, "sha256": TEMPLATE_SHA256, "source": TEMPLATE_SOURCE,
                        "note": "not in this repository; see the script's help"}
    meta["qwen36_template"] = {"name": QWEN36_NAME, "changes": [list(c) for c in QWEN36_CHANGES]}
    meta["lookalike_template"] = {"name": LOOKALIKE.name, "path": str(LOOKALIKE.relative_to(mlf.REPO)),
                                  "sha256": mlf.sha256_file(LOOKALIKE)}
    meta["requests"] = {
        "render": {"endpoint": "POST /apply-template",
                   "body": "{messages, tools?, chat_template_kwargs?, add_generation_prompt}",
                   "fields": "rendered (prompt), generation_prompt, format; error when llama.cpp refuses",
                   "note": "the server's default template kwargs apply under the request's: preserve_reasoning "
                           "true (common_params_parse's --reasoning-preserve default), as in llama-server"},
        "parse": {"endpoint": "POST /parse",
                  "body": "{messages, tools?, chat_template_kwargs?, parallel_tool_calls, text}",
                  "fields": "message: llama.cpp's parse of text (OpenAI assistant message), format"},
    }
    mlf.write_fixture(OUT, meta, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
