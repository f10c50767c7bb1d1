"""`trajlab serve`: an OpenAI-compatible HTTP server over the hf engine.

    trajlab serve --model default --port 8000
    curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "2+2?"}]}'

Endpoints (JSON in, JSON out, the fields of OpenAI's API that a CPU engine can honour):
  GET  /v1/models              the one served model
  POST /v1/completions         prompt: a string or a list of token ids; max_tokens,
                               temperature, top_p, top_k, n, stop, seed, logprobs,
                               stream; `return_token_ids: true` adds prompt_token_ids and
                               each choice's token_ids (every sampled token, EOS and stop
                               included), and `include_stop_str_in_output: true` keeps the
                               stop string in the text, both as vLLM's server does
  POST /v1/chat/completions    messages (with tool calls and tool results), tools,
                               max_tokens / max_completion_tokens, temperature, top_p, n,
                               stop, seed, logprobs / top_logprobs (sampled token only),
                               stream, return_token_ids
Prompts are rendered with the tokenizer's chat template (with `tools` when given, as the
`native` protocol does); calls the model writes as <tool_call>{"name", "arguments"}
</tool_call> come back as `tool_calls` with finish_reason "tool_calls".

Logprobs follow trajlab's convention (engines/base.py): the sampled token under
softmax(logits / temperature) over the full vocabulary; greedy reports temperature 1.
With `top_logprobs` > 0 the list holds the sampled token only (the engine keeps no
alternatives). Requests that arrive together are batched: a worker thread takes every
waiting request, groups them by sampling settings and runs each group as one
`HFEngine.generate` batch. `stream: true` sends Server-Sent Events in OpenAI's chunk
format once the generation is done (one content chunk, then a finish chunk and
`data: [DONE]`), not token by token.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trajlab.engines.base import Generation, SamplingParams

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
MAX_BODY = 16 << 20  # bytes of one request body


class BadRequest(ValueError):
    """A request the server refuses, with a message that names the field."""


@dataclass
class _Job:
    prompts: list[list[int]]
    params: SamplingParams
    stop: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    error: BaseException | None = None


class Batcher:
    """Runs generation jobs on one engine from a worker thread, batching the jobs that
    wait together by (sampling settings, stop strings)."""

    def __init__(self, engine: Any, max_wait_s: float = 0.01) -> None:
        self.engine = engine
        self.max_wait_s = max_wait_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="trajlab-serve", daemon=True)
        self.thread.start()

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, stop: Sequence[str]
    ) -> list[Generation]:
        job = _Job(prompts, params, tuple(stop))
        self.jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            time.sleep(self.max_wait_s)  # let requests sent together arrive together
            while True:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                batch.append(nxt)
            groups: dict[tuple, list[_Job]] = defaultdict(list)
            for j in batch:
                p = j.params
                groups[(p.temperature, p.top_p, p.top_k, p.max_new_tokens, p.seed, j.stop)].append(
                    j
                )
            for jobs in groups.values():
                self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        prompts = [p for j in jobs for p in j.prompts]
        try:
            gens = self.engine.generate(prompts, jobs[0].params, stop=list(jobs[0].stop))
        except BaseException as e:  # handed to every waiting request
            for j in jobs:
                j.error = e
                j.done.set()
            return
        at = 0
        for j in jobs:
            j.result = gens[at : at + len(j.prompts)]
            at += len(j.prompts)
            j.done.set()


# -- request parsing -----------------------------------------------------------------------


def _number(body: dict, key: str, default: float, lo: float | None = None) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{key}' must be a number, got {value!r}")
    if lo is not None and value < lo:
        raise BadRequest(f"'{key}' must be >= {lo:g}, got {value}")
    return value


def sampling_from(body: dict, context_left: int) -> tuple[SamplingParams, tuple[str, ...], int]:
    """SamplingParams, stop strings and n from an OpenAI request body."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(256, context_left)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"'max_tokens' must be an integer >= 1, got {max_tokens!r}")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest(f"'stop' must be a string or a list of non-empty strings, got {stop!r}")
    n = int(_number(body, "n", 1, lo=1))
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}")
    try:
        params = SamplingParams(
            temperature=float(_number(body, "temperature", 1.0)),
            top_p=float(_number(body, "top_p", 1.0)),
            top_k=max(0, int(_number(body, "top_k", 0))),
            max_new_tokens=max_tokens,
            seed=seed,
        )
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return params, tuple(stop), n


def _chat_messages(messages: Any) -> list[dict]:
    """OpenAI chat messages as chat-template messages (tool-call arguments as dicts)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise BadRequest(
                f"messages[{i}] needs a role of system, user, assistant or tool, got {m!r}"
            )
        msg = {"role": m["role"], "content": _text_content(m.get("content"), i)}
        if m.get("tool_calls"):
            msg["tool_calls"] = [_template_call(c, i) for c in m["tool_calls"]]
        if m["role"] == "tool" and m.get("name"):
            msg["name"] = m["name"]
        out.append(msg)
    return out


def _text_content(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(f"messages[{i}]: only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts")


def _template_call(call: Any, i: int) -> dict:
    try:
        fn = call["function"]
        args = fn.get("arguments", {})
        args = json.loads(args) if isinstance(args, str) else args
        return {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"messages[{i}].tool_calls: malformed call {call!r} ({e})") from None


def tool_calls_in(text: str) -> tuple[str, list[dict]]:
    """The text outside <tool_call> blocks, and the calls in OpenAI's format (blocks that
    are not valid {"name", "arguments"} JSON stay in the text)."""
    calls, kept, last = [], [], 0
    for m in TOOL_CALL_RE.finditer(text):
        try:
            call = json.loads(m.group(1))
            name, args = call["name"], call.get("arguments", {})
            if not isinstance(name, str):
                raise TypeError("name must be a string")
        except (ValueError, KeyError, TypeError):
            continue
        kept.append(text[last : m.start()])
        last = m.end()
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    kept.append(text[last:])
    return "".join(kept).strip() if calls else text, calls


# -- the server ----------------------------------------------------------------------------


class Server:
    """What the HTTP handler needs: the engine's tokenizer, the batcher, the model name."""

    def __init__(self, engine: Any, model_name: str, max_wait_s: float = 0.01) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name
        self.batcher = Batcher(engine, max_wait_s)
        model = getattr(engine, "model", None)
        config = getattr(model, "config", None)
        self.context = getattr(config, "max_position_embeddings", None) or 1 << 30

    def close(self) -> None:
        self.batcher.close()

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(int(token_id))

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            return self._prompt_ids(prompt[0])
        if (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            vocab = len(self.tokenizer)
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise BadRequest(f"'prompt' token ids must be in [0, {vocab}), got {bad[:5]}")
            return list(prompt)
        raise BadRequest(
            "'prompt' must be a string or a list of token ids (one prompt per request)"
        )

    def _check_length(self, ids: list[int]) -> None:
        if not 0 < len(ids) < self.context:
            raise BadRequest(
                f"the prompt has {len(ids)} tokens; the model takes 1 to {self.context - 1}"
            )

    def completions(self, body: dict) -> dict:
        ids = self._prompt_ids(body.get("prompt"))
        self._check_length(ids)
        params, stop, n = sampling_from(body, self.context - len(ids))
        gens = self.batcher.generate([ids] * n, params, stop)
        want_ids = bool(body.get("return_token_ids"))
        keep_stop = bool(body.get("include_stop_str_in_output"))
        choices = []
        for i, g in enumerate(gens):
            choice: dict[str, Any] = {
                "index": i,
                "text": _visible_text(g, self.tokenizer, keep_stop),
                "finish_reason": _finish(g),
                "logprobs": None,
            }
            if body.get("logprobs") is not None:
                pieces = [self._piece(t) for t in g.token_ids]
                offsets, at = [], 0
                for p in pieces:
                    offsets.append(at)
                    at += len(p)
                choice["logprobs"] = {
                    "tokens": pieces,
                    "token_logprobs": g.logprobs,
                    "top_logprobs": None,
                    "text_offset": offsets,
                }
            choices.append(choice)
        return self._envelope("text_completion", choices, ids, gens, want_ids)

    def chat(self, body: dict) -> dict:
        messages = _chat_messages(body.get("messages"))
        tools = body.get("tools") or None
        if tools is not None and (
            not isinstance(tools, list)
            or not all(isinstance(t, dict) and t.get("type") == "function" for t in tools)
        ):
            raise BadRequest("'tools' must be a list of {type: function, function: {...}}")
        template_tools = [t["function"] for t in tools] if tools else None
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tools=template_tools, add_generation_prompt=True, tokenize=False
            )
        except Exception as e:  # the template's own error (e.g. roles out of order)
            raise BadRequest(f"the chat template could not render these messages: {e}") from None
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        self._check_length(ids)
        params, stop, n = sampling_from(body, self.context - len(ids))
        gens = self.batcher.generate([ids] * n, params, stop)
        want_ids = bool(body.get("return_token_ids"))
        choices = []
        keep_stop = bool(body.get("include_stop_str_in_output"))
        for i, g in enumerate(gens):
            text = _visible_text(g, self.tokenizer, keep_stop)
            content, calls = tool_calls_in(text) if tools else (text, [])
            message: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                message["tool_calls"] = calls
            choice: dict[str, Any] = {
                "index": i,
                "message": message,
                "finish_reason": "tool_calls" if calls else _finish(g),
                "logprobs": None,
            }
            if body.get("logprobs"):
                top = int(body.get("top_logprobs") or 0)
                entries = []
                for t, lp in zip(g.token_ids, g.logprobs, strict=True):
                    piece = self._decode([t])
                    entry = {"token": piece, "logprob": lp, "bytes": list(piece.encode())}
                    entry["top_logprobs"] = [dict(entry)] if top else []
                    entries.append(entry)
                choice["logprobs"] = {"content": entries}
            choices.append(choice)
        return self._envelope("chat.completion", choices, ids, gens, want_ids)

    def _envelope(
        self, kind: str, choices: list, ids: list[int], gens: list[Generation], want_ids: bool
    ) -> dict:
        """The response around `choices`; with want_ids (return_token_ids), the prompt's
        and every choice's token ids."""
        completion = sum(len(g.token_ids) for g in gens)
        if want_ids:
            for choice, g in zip(choices, gens, strict=True):
                choice["token_ids"] = g.token_ids
        out = {
            "id": f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": completion,
                "total_tokens": len(ids) + completion,
            },
        }
        if want_ids:
            out["prompt_token_ids"] = ids
        return out


def _finish(g: Generation) -> str:
    return "length" if g.finish_reason == "length" else "stop"


def _visible_text(g: Generation, tokenizer, keep_stop: bool) -> str:
    """What OpenAI's API returns as text: without the EOS token the engine keeps, and cut
    before the stop string unless the request sets include_stop_str_in_output (token_ids
    always hold every sampled token)."""
    ids = list(g.token_ids)
    if g.finish_reason == "eos" and ids:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if g.stop_string and not keep_stop and g.stop_string in text:
        text = text[: text.index(g.stop_string)]
    return text


def _chunks(response: dict) -> list[dict]:
    """A finished response as OpenAI streaming chunks: per choice one delta with all of
    its content (and tool calls), then one with its finish reason."""
    chat = response["object"] == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    base = {k: response[k] for k in ("id", "created", "model")} | {"object": kind}
    out = []
    for c in response["choices"]:
        if chat:
            delta = {"role": "assistant", "content": c["message"]["content"] or ""}
            if c["message"].get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": k, **call} for k, call in enumerate(c["message"]["tool_calls"])
                ]
            first = {"index": c["index"], "delta": delta, "finish_reason": None}
            if c.get("logprobs"):
                first["logprobs"] = c["logprobs"]
            last = {"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"]}
        else:
            first = {"index": c["index"], "text": c["text"], "finish_reason": None,
                     "logprobs": c.get("logprobs")}  # fmt: skip
            last = {"index": c["index"], "text": "", "finish_reason": c["finish_reason"]}
        out += [base | {"choices": [first]}, base | {"choices": [last]}]
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "trajlab-serve"
    app: Server  # set on the subclass make_server builds

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # quiet; errors are answered as JSON

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [
                {"id": self.app.model_name, "object": "model", "owned_by": "trajlab"}]})  # fmt: skip
        elif self.path.rstrip("/") in ("/health", ""):
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        routes = {"/v1/completions": self.app.completions, "/v1/chat/completions": self.app.chat}
        handler = routes.get(self.path.rstrip("/"))
        if handler is None:
            return self._error(404, f"no such endpoint: POST {self.path}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise BadRequest(f"request body over {MAX_BODY} bytes")
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            response = handler(body)
        except (BadRequest, json.JSONDecodeError) as e:
            return self._error(400, str(e))
        except Exception as e:  # the engine failed: say so, keep serving
            return self._error(500, f"{type(e).__name__}: {e}", kind="server_error")
        if body.get("stream"):
            self._stream(_chunks(response))
        else:
            self._json(200, response)

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": status}})

    def _stream(self, chunks: list[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for c in chunks:
            self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def make_server(app: Server, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for `app` (port 0 picks a free one: server.server_address[1])."""
    handler = type("Handler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
