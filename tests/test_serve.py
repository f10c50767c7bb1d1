"""`trajlab serve` on loopback with the tiny model, called with the official `openai`
client (completions with token ids, chat, streaming, tool calls, logprobs, errors), and the
`openai` engine against it: the same generations, and the same evaluation records, as the
hf engine under greedy decoding."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")

from trajlab.engines.base import SamplingParams  # noqa: E402
from trajlab.engines.fake import FakeEngine  # noqa: E402
from trajlab.engines.hf import HFEngine  # noqa: E402
from trajlab.engines.openai_engine import OpenAIEngine  # noqa: E402
from trajlab.serve import Server, make_server, tool_calls_in  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


class Running:
    def __init__(self, engine, name="tiny"):
        self.app = Server(engine, name)
        self.http = make_server(self.app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.client = openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0)

    def close(self):
        self.http.shutdown()
        self.http.server_close()
        self.app.close()


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_tokenizer):
    return HFEngine(tiny_model, tiny_tokenizer, max_batch_size=16)


@pytest.fixture(scope="module")
def served(engine):
    s = Running(engine)
    yield s
    s.close()


def ids_of(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_completions_with_token_ids_match_the_engine(served, engine, tiny_tokenizer):
    prompt = ids_of(tiny_tokenizer, "The answer is")
    want = engine.generate([prompt], GREEDY)[0]
    r = served.client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, logprobs=1,
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    c = r.choices[0]
    assert c.model_extra["token_ids"] == want.token_ids
    assert r.model_extra["prompt_token_ids"] == prompt
    assert c.logprobs.token_logprobs == want.logprobs
    assert r.usage.completion_tokens == len(want.token_ids)
    assert c.finish_reason == ("length" if want.finish_reason == "length" else "stop")


def test_string_prompt_n_samples_and_seeds(served):
    kw = dict(model="tiny", prompt="Hello world", max_tokens=8, temperature=1.0, n=3, seed=5)
    a = served.client.completions.create(**kw)
    b = served.client.completions.create(**kw)
    assert len(a.choices) == 3
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded: reproducible


def test_chat_completion_renders_the_template(served, engine, tiny_tokenizer):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    text = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = ids_of(tiny_tokenizer, text)
    want = engine.generate([prompt], GREEDY)[0]
    r = served.client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, logprobs=True,
        top_logprobs=1, extra_body={"return_token_ids": True},
    )  # fmt: skip
    c = r.choices[0]
    assert c.model_extra["token_ids"] == want.token_ids
    assert r.model_extra["prompt_token_ids"] == prompt
    assert [e.logprob for e in c.logprobs.content] == want.logprobs
    assert c.message.role == "assistant"


def test_streaming_chat_reassembles_the_answer(served):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
              temperature=0)  # fmt: skip
    whole = served.client.chat.completions.create(**kw)
    chunks = list(served.client.chat.completions.create(**kw, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == (whole.choices[0].message.content or "")
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_streaming_completion(served):
    kw = dict(model="tiny", prompt="Hello", max_tokens=6, temperature=0)
    whole = served.client.completions.create(**kw)
    chunks = list(served.client.completions.create(**kw, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == whole.choices[0].text


TOOLS = [{"type": "function", "function": {
    "name": "python", "description": "run code",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}]  # fmt: skip


def test_tool_calls_come_back_in_openai_format(tiny_tokenizer):
    import copy

    from trajlab.testing import CHATML_TOOLS_TEMPLATE

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHATML_TOOLS_TEMPLATE  # renders `tools`, tool calls and results
    call = '<tool_call>{"name": "python", "arguments": {"code": "print(6*7)"}}</tool_call>'
    fake = FakeEngine(tok, ["Let me compute. " + call, "It is 42."])
    s = Running(fake)
    try:
        messages = [{"role": "user", "content": "6*7?"}]
        r = s.client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        (tc,) = c.message.tool_calls
        assert tc.function.name == "python"
        assert json.loads(tc.function.arguments) == {"code": "print(6*7)"}
        assert c.message.content == "Let me compute."
        # the result goes back as a tool message; the template renders the whole exchange
        messages += [
            {"role": "assistant", "content": c.message.content,
             "tool_calls": [tc.model_dump()]},
            {"role": "tool", "tool_call_id": tc.id, "content": "42"},
        ]  # fmt: skip
        r2 = s.client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
        assert r2.choices[0].message.content == "It is 42."
        assert r2.choices[0].finish_reason == "stop"
        rendered = tok.decode(fake.requests[-1])
        assert '"code": "print(6*7)"' in rendered and "<tool_response>\n42" in rendered
        assert '"name": "python"' in tok.decode(fake.requests[0])  # the tools list
    finally:
        s.close()


def test_tool_calls_in_leaves_malformed_blocks_as_text():
    text, calls = tool_calls_in("a <tool_call>not json</tool_call> b")
    assert calls == [] and text == "a <tool_call>not json</tool_call> b"


def test_requests_sent_together_share_one_batch(tiny_tokenizer):
    calls = []

    class Counting(FakeEngine):
        def generate(self, prompts, params, stop=(), on_tokens=None):
            calls.append(len(prompts))
            return super().generate(prompts, params, stop, on_tokens)

    s = Running(Counting(tiny_tokenizer, lambda prompt: "ok"))
    s.app.batcher.max_wait_s = 0.3
    try:
        threads = [
            threading.Thread(target=s.client.completions.create,
                             kwargs=dict(model="tiny", prompt=f"q{i}", max_tokens=4))
            for i in range(4)
        ]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(calls) == 4 and len(calls) < 4
    finally:
        s.close()


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": [10**9]}, "token ids"),
        ({}, "prompt"),
    ],
)
def test_bad_requests_get_400_naming_the_field(served, body, needle):
    with pytest.raises(openai.BadRequestError, match=needle):
        served.client.completions.create(model="tiny", **{"prompt": None, **body})


def test_bad_json_and_unknown_endpoints(served):
    req = urllib.request.Request(served.url + "/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and "error" in json.loads(e.value.read())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(served.url + "/nope")
    assert e.value.code == 404
    assert [m.id for m in served.client.models.list().data] == ["tiny"]


def test_openai_engine_gives_the_hf_engines_generations(served, engine, tiny_tokenizer):
    prompts = [ids_of(tiny_tokenizer, t) for t in ("Hello world", "a", "What is 6 times 7?")]
    stop = ["ance", "\n"]
    want = engine.generate(prompts, GREEDY, stop=stop)
    remote = OpenAIEngine(tiny_tokenizer, served.url, concurrency=2)
    got = remote.generate(prompts, GREEDY, stop=stop)
    for a, b in zip(got, want, strict=True):
        assert a.token_ids == b.token_ids
        # the server batches whichever requests arrive together: float noise only
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert (a.finish_reason, a.stop_string) == (b.finish_reason, b.stop_string)
    assert remote.model == "tiny" and remote.token_exact
    remote.check_trainable()


def test_eval_through_the_openai_engine_matches_the_hf_engine(served, tiny_model_dir, tmp_path):
    from trajlab.eval.harness import EvalConfig, evaluate

    def run(out, **kw):
        cfg = EvalConfig(model=str(tiny_model_dir), task="arith", limit=3, out=str(out),
                         progress=False, **kw)  # fmt: skip
        cfg.agent.tools, cfg.agent.max_new_tokens = [], 16
        evaluate(cfg)
        return [json.loads(line) for line in (out / "trajectories.jsonl").open()]

    local = run(tmp_path / "hf")
    remote = run(tmp_path / "openai", engine="openai", engine_url=served.url)
    assert len(local) == len(remote) == 3
    for a, b in zip(local, remote, strict=True):
        for sa, sb in zip(a["segments"], b["segments"], strict=True):
            assert (sa["source"], sa["token_ids"]) == (sb["source"], sb["token_ids"])
            assert sa.get("logprobs") == pytest.approx(sb.get("logprobs"), abs=1e-4)
        assert (a["reward"], a["prediction"], a["stop_reason"]) == (
            b["reward"], b["prediction"], b["stop_reason"],
        )  # fmt: skip
        assert a["metadata"]["correct"] == b["metadata"]["correct"]


class _TextOnly(BaseHTTPRequestHandler):
    """A server that answers completions with text only (no token ids, no logprobs), and
    fails its first request with 503."""

    hits = 0

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).hits == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "text": "42", "finish_reason": "length",
                                        "logprobs": None}]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_text_only_server_is_retried_and_refused_for_training(tiny_tokenizer):
    http = ThreadingHTTPServer(("127.0.0.1", 0), _TextOnly)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/v1"
        remote = OpenAIEngine(tiny_tokenizer, url, model="m", max_retries=2, timeout_s=10)
        (g,) = remote.generate([[1, 2, 3]], GREEDY)
        assert _TextOnly.hits == 2  # the 503 was retried
        assert g.token_ids == ids_of(tiny_tokenizer, "42") and g.meta["token_exact"] is False
        assert not remote.token_exact
        with pytest.raises(RuntimeError, match="cannot be trained on"):
            remote.check_trainable()
    finally:
        http.shutdown()
        http.server_close()


def test_engine_settings_are_checked(tiny_tokenizer):
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIEngine(tiny_tokenizer, "http://127.0.0.1:1/v1", concurrency=0)
    from trajlab.eval.harness import EvalConfig

    with pytest.raises(ValueError, match="engine_url"):
        EvalConfig(engine="openai")


def test_an_unreachable_server_is_named_in_the_error(tiny_tokenizer):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = OpenAIEngine(
        tiny_tokenizer, f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout_s=5
    )
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        remote.generate([[1, 2]], GREEDY)


def test_the_serve_command_starts_answers_and_stops(tiny_model_dir):
    import re
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "trajlab.cli", "serve", "--model", str(tiny_model_dir),
           "--port", "0", "--name", "tiny", "--threads", "1"]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"at (http://\S+/v1)", line)
        assert m, line + p.stderr.read()[-2000:]
        client = openai.OpenAI(base_url=m.group(1), api_key="unused", max_retries=0)
        r = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_the_serve_command_names_a_bad_model(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "trajlab.cli", "serve", "--model", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--model" in r.stderr and "nope" in r.stderr
