#!/usr/bin/env python3
"""`blockspec serve` driven by the official `openai` Python client (as editors and agents use
it): models (list, retrieve), chat (n choices), streaming, tool calls round trip,
reasoning_content, legacy completions, embeddings, constrained output (response_format, the
SDK's parse helper), logit_bias, errors. Starts its own servers; run through scripts/test-openai.sh.

Usage: test-openai.py BLOCKSPEC_BINARY MODELS_DIR TEMPLATES_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai
import pydantic

BIN, MODELS, TEMPLATES = sys.argv[1], sys.argv[2], sys.argv[3]
M05 = os.path.join(MODELS, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
M15 = os.path.join(MODELS, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
KEY = "test-key"


class Server:
    def __init__(self, model, *args):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.proc = subprocess.Popen(
            [BIN, "serve", "-m", model, "--port", "0", "--api-key", KEY, *args],
            stdout=subprocess.DEVNULL, stderr=self.log)
        t0 = time.time()
        self.base = None
        while self.base is None:
            text = open(self.log.name).read()
            if "listening on http://" in text:
                self.base = text.split("listening on ")[1].split()[0]
            self.check_alive()
            assert time.time() - t0 < 60, text
            time.sleep(0.05)
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health") as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as e:
                assert e.code == 503, e
            self.check_alive()
            assert time.time() - t0 < 300, "model never loaded"
            time.sleep(0.1)
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key=KEY, max_retries=0)

    def check_alive(self):
        if self.proc.poll() is not None:
            sys.exit("server exited: " + open(self.log.name).read())

    def close(self):
        self.proc.kill()
        self.proc.wait()


def tokenize(s, text):
    req = urllib.request.Request(s.base + "/tokenize", data=json.dumps({"content": text}).encode(),
                                 headers={"Authorization": "Bearer " + KEY,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["tokens"]


class Point(pydantic.BaseModel):
    x: int
    y: int


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what.split(":")[0])


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def main():
    s = Server(M15, "-c", "1024", "--spec", "ngram")
    c = s.client
    try:
        ids = [m.id for m in c.models.list().data]
        check(len(ids) == 1, f"models.list: {ids}")
        model = ids[0]

        msgs = [{"role": "user", "content": "Write a Python function that reverses a string."}]
        r = c.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0)
        text = r.choices[0].message.content
        check(bool(text) and r.usage.completion_tokens == 24, f"chat: {r}")

        stream = c.chat.completions.create(model=model, messages=msgs, max_tokens=24,
                                           temperature=0, stream=True,
                                           stream_options={"include_usage": True})
        parts, usage, finish = [], None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for ch in chunk.choices:
                if ch.delta.content:
                    parts.append(ch.delta.content)
                finish = ch.finish_reason or finish
        check("".join(parts) == text, f"chat stream == non-stream: {parts!r} vs {text!r}")
        check(usage is not None and usage.completion_tokens == 24 and finish == "length",
              f"stream usage: {usage} {finish}")

        ask = {"role": "user", "content": "What is the weather in Paris?"}
        r = c.chat.completions.create(model=model, messages=[ask], tools=TOOLS,
                                      max_tokens=64, temperature=0)
        calls = r.choices[0].message.tool_calls
        check(r.choices[0].finish_reason == "tool_calls" and calls
              and calls[0].function.name == "get_weather"
              and json.loads(calls[0].function.arguments) == {"city": "Paris"},
              f"tool call: {r}")

        stream = c.chat.completions.create(model=model, messages=[ask], tools=TOOLS,
                                           max_tokens=64, temperature=0, stream=True)
        acc = {}
        for chunk in stream:
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    a = acc.setdefault(tc.index, {"name": "", "arguments": "", "id": None})
                    a["id"] = tc.id or a["id"]
                    a["name"] += tc.function.name or ""
                    a["arguments"] += tc.function.arguments or ""
        check(len(acc) == 1 and acc[0]["name"] == "get_weather"
              and json.loads(acc[0]["arguments"]) == {"city": "Paris"} and acc[0]["id"],
              f"streamed tool call: {acc}")

        follow = [ask, r.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": calls[0].id,
                   "content": json.dumps({"temperature_c": 18, "sky": "sunny"})}]
        r2 = c.chat.completions.create(model=model, messages=follow, tools=TOOLS,
                                       max_tokens=32, temperature=0)
        check(r2.usage.prompt_tokens > r.usage.prompt_tokens
              and r2.choices[0].message.role == "assistant",
              f"tool round trip: {r2}")

        r = c.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=12,
                                 temperature=0)
        check(r.choices[0].text and r.usage.completion_tokens == 12, f"completions: {r}")

        r = c.chat.completions.create(model=model, messages=msgs, n=2, max_tokens=4,
                                      temperature=0)
        check([ch.index for ch in r.choices] == [0, 1]
              and r.choices[0].message.content == r.choices[1].message.content
              and r.usage.completion_tokens == 8, f"n=2: {r}")
        try:
            c.chat.completions.create(model=model, messages=msgs, n=17, max_tokens=4)
            check(False, "n=17 refused")
        except openai.BadRequestError as e:
            check("'n'" in str(e), f"n=17 refused: {e}")

        # Constrained output: a JSON Schema through response_format; the content parses and
        # has the schema's fields.
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {"name": {"type": "string", "maxLength": 20},
                                 "languages": {"type": "array", "minItems": 2, "maxItems": 3,
                                               "items": {"type": "string", "maxLength": 12}}},
                  "required": ["name", "languages"]}
        who = [{"role": "user", "content": "Introduce a fictional programmer."}]
        r = c.chat.completions.create(
            model=model, messages=who, max_tokens=80, temperature=0,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "programmer", "strict": True, "schema": schema}})
        v = json.loads(r.choices[0].message.content)
        check(set(v) == {"name", "languages"} and isinstance(v["name"], str)
              and 2 <= len(v["languages"]) <= 3
              and all(isinstance(x, str) for x in v["languages"]),
              f"response_format json_schema: {r}")
        # The SDK's parse helper: a pydantic model as a strict schema, parsed back.
        p = c.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Give me a point on the plane."}],
            max_tokens=40, temperature=0, response_format=Point)
        check(isinstance(p.choices[0].message.parsed, Point), f"chat.completions.parse: {p}")
        r = c.chat.completions.create(model=model, messages=who, max_tokens=60, temperature=0,
                                      response_format={"type": "json_object"})
        check(r.choices[0].message.content.lstrip().startswith("{"),
              f"response_format json_object: {r}")
        try:
            c.chat.completions.create(
                model=model, messages=who, max_tokens=4,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}}})
            check(False, "bad schema refused")
        except openai.BadRequestError as e:
            check("'response_format'" in str(e), f"bad schema refused: {e}")

        # logit_bias: banning the first token of the reply changes it.
        hello = [{"role": "user", "content": "Say hello."}]
        r0 = c.chat.completions.create(model=model, messages=hello, max_tokens=6, temperature=0)
        first = tokenize(s, r0.choices[0].message.content)[0]
        r1 = c.chat.completions.create(model=model, messages=hello, max_tokens=6, temperature=0,
                                       logit_bias={str(first): -100})
        check(r1.choices[0].message.content != r0.choices[0].message.content
              and tokenize(s, r1.choices[0].message.content)[0] != first,
              f"logit_bias: {r0.choices[0].message.content!r} -> {r1.choices[0].message.content!r}")
        try:
            c.chat.completions.create(model=model, messages=hello, max_tokens=4,
                                      logit_bias={"99999999": 1})
            check(False, "logit_bias out of range refused")
        except openai.BadRequestError as e:
            check("'logit_bias'" in str(e), f"logit_bias out of range refused: {e}")

        m = c.models.retrieve(model)
        check(m.id == model and m.object == "model", f"models.retrieve: {m}")
        try:
            c.models.retrieve("no-such-model")
            check(False, "unknown model is 404")
        except openai.NotFoundError:
            check(True, "unknown model is 404")
        bad = openai.OpenAI(base_url=s.base + "/v1", api_key="wrong", max_retries=0)
        try:
            bad.chat.completions.create(model=model, messages=msgs, max_tokens=4)
            check(False, "wrong key refused")
        except openai.AuthenticationError:
            check(True, "wrong key refused")
    finally:
        s.close()

    s = Server(M05, "-c", "1024", "--spec", "ngram", "--chat-template-file",
               os.path.join(TEMPLATES, "think.jinja"), "--embeddings", "--pooling", "last")
    c = s.client
    try:
        msgs = [{"role": "user", "content": "What is 2 + 3?"}]
        r = c.chat.completions.create(model="any", messages=msgs, max_tokens=16, temperature=0,
                                      extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        reasoning = getattr(r.choices[0].message, "reasoning_content", None)
        check(bool(reasoning) and "<think>" not in reasoning, f"reasoning_content: {r}")
        stream = c.chat.completions.create(model="any", messages=msgs, max_tokens=16,
                                           temperature=0, stream=True)
        streamed = "".join(getattr(ch.delta, "reasoning_content", None) or ""
                           for chunk in stream for ch in chunk.choices)
        check(streamed.rstrip() == reasoning, f"streamed reasoning: {streamed!r} vs {reasoning!r}")
        r = c.chat.completions.create(model="any", messages=msgs, max_tokens=16, temperature=0,
                                      extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        check(getattr(r.choices[0].message, "reasoning_content", None) is None
              and r.choices[0].message.content, f"enable_thinking=false: {r}")

        # A constrained reply where the template opened the reasoning block is content.
        r = c.chat.completions.create(model="any", messages=msgs, max_tokens=16, temperature=0,
                                      response_format={"type": "json_schema", "json_schema": {
                                          "name": "sum", "schema": {
                                              "type": "object", "required": ["sum"],
                                              "properties": {"sum": {"type": "integer"}}}}},
                                      extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        check(getattr(r.choices[0].message, "reasoning_content", None) is None
              and isinstance(json.loads(r.choices[0].message.content)["sum"], int),
              f"constrained reply after an opened <think>: {r}")

        # The client asks for base64 and decodes it.
        e = c.embeddings.create(model="any", input=["hello world", "stock markets fell"])
        v0, v1 = e.data[0].embedding, e.data[1].embedding
        norm = sum(x * x for x in v0) ** 0.5
        cos = sum(x * y for x, y in zip(v0, v1))
        check(len(e.data) == 2 and len(v0) == 896 and abs(norm - 1) < 1e-4 and cos < 0.99
              and e.usage.prompt_tokens > 0, f"embeddings: {len(v0)} {norm} {cos} {e.usage}")
        f = c.embeddings.create(model="any", input="hello world", encoding_format="float")
        check(max(abs(a - b) for a, b in zip(f.data[0].embedding, v0)) < 1e-6,
              "embeddings float == base64")
    finally:
        s.close()
    print("openai client: all checks passed")


main()
