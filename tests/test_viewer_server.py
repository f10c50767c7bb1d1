"""The viewer's run discovery, JSON API over HTTP, CLI and export (no browser needed)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trajlab.types import read_jsonl
from trajlab.viewer import cli
from trajlab.viewer.runs import alarm_rows, discover
from trajlab.viewer.server import STATIC, ViewerApp, serve_in_thread
from trajlab.viewer.synthetic import make_eval_run, make_train_run


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_train_run(root / "train", steps=8, per_step=6)
    make_eval_run(root / "eval", n_examples=10, samples=2)
    return root


@pytest.fixture(scope="module")
def server(runs_dir):
    app = ViewerApp(discover([runs_dir], cache=False))
    srv, url = serve_in_thread(app)
    yield app, url
    srv.shutdown()
    srv.server_close()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_discover_layout(runs_dir):
    runs = discover([runs_dir])
    assert [(r.name, r.kind, r.parent, r.step) for r in runs] == [
        ("eval", "eval", None, None),
        ("train", "train", None, None),
        ("train/eval/step_000004", "eval", "r1", 4),
        ("train/eval/step_000008", "eval", "r1", 8),
    ]
    assert len(runs[1].trajectory_files()) == 8
    assert discover([runs_dir / "train"])[0].children == ["r1", "r2"]


def test_discover_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        discover([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError, match="docs/run_directory.md"):
        discover([tmp_path])


def test_api_runs_metrics_and_alarms(server):
    app, url = server
    code, body = get(url + "/api/runs")
    assert code == 200
    by_name = {r["name"]: r for r in body["runs"]}
    train = by_name["train"]
    assert (
        train["kind"] == "train" and train["status"] == "done" and train["headline"]["steps"] == 8
    )
    assert train["config"]["algo"]["advantage"] == "grpo"
    assert [a["name"] for a in train["alarms"]] == ["tool_call_rate_collapse"]
    assert by_name["eval"]["headline"]["n"] == 20
    code, m = get(url + f"/api/runs/{train['id']}/metrics")
    assert code == 200 and len(m["rows"]) == 8 and [c["step"] for c in m["eval_children"]] == [4, 8]


def test_eval_values_are_merged_for_alarms(runs_dir):
    runs = discover([runs_dir])
    rows = alarm_rows(runs[1], {r.id: r for r in runs})
    assert "eval/accuracy" in rows[3] and rows[3]["step"] == 4
    assert "eval/accuracy" not in rows[2]


def test_api_browse_filter_and_trajectory(server, runs_dir):
    app, url = server
    trajs = [
        t
        for p in sorted((runs_dir / "train" / "trajectories").glob("*.jsonl"))
        for t in read_jsonl(p)
    ]
    # Indexing runs in the background and a page is served as soon as its rows exist, so
    # `total` counts the rows indexed so far: ask again until the index says it is complete.
    deadline = time.monotonic() + 30
    while True:
        code, page = get(url + "/api/runs/r1/trajectories?limit=10&offset=5")
        if page["index"]["complete"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert code == 200 and page["total"] == len(trajs) == 48 and len(page["rows"]) == 10
    assert [r["example_id"] for r in page["rows"]] == [t.example_id for t in trajs[5:15]]
    code, page = get(url + "/api/runs/r1/trajectories?tool_errors=true&limit=100")
    assert page["total"] == sum(1 for t in trajs if any(not c.ok for c in t.tool_calls))
    ref = page["rows"][0]["ref"]
    code, one = get(url + f"/api/runs/r1/trajectory?ref={ref}")
    assert code == 200 and one["pieces"] is None and one["tokenizer"] is None
    assert one["trajectory"]["tool_calls"][0]["ok"] is False
    code, facets = get(url + "/api/runs/r1/facets")
    assert facets["steps"] == list(range(1, 9)) and facets["n"] == 48


def test_api_errors(server):
    app, url = server
    assert get(url + "/api/runs/r99/metrics")[0] == 404
    code, body = get(url + "/api/runs/r1/trajectories?correct=perhaps")
    assert code == 400 and "true or false" in body["error"]
    assert get(url + "/api/runs/r1/trajectory")[0] == 400
    assert get(url + "/api/runs/r1/trajectory?ref=0:999")[0] == 404
    assert get(url + "/api/nothing")[0] == 404
    assert get(url + "/static/../server.py")[0] == 404


def test_static_assets_are_served_and_local(server):
    app, url = server
    with urllib.request.urlopen(url + "/") as r:
        html = r.read().decode()
    assert "/static/app.js" in html
    for name in ("app.js", "chart.js", "app.css", "index.html"):
        text = (STATIC / name).read_text()
        # no CDN, no remote fonts: every asset the page loads is in this package
        assert not re.search(r"(src|href)\s*=\s*[\"']https?://", text), name
        assert "@import" not in text and "googleapis" not in text
        with urllib.request.urlopen(url + "/static/" + name) as r:
            assert r.status == 200


def test_tokenizer_decoding(tmp_path):
    run = make_train_run(tmp_path / "tok", steps=2, per_step=2, eval_every=0, with_tokenizer=True)
    app = ViewerApp(discover([run], cache=False))
    payload = app.trajectory("r0", "0:0")
    assert payload["tokenizer"] == str(run / "tokenizer")
    pieces = payload["pieces"]
    k = 0
    for seg in payload["trajectory"]["segments"]:
        n = len(seg["token_ids"])
        assert "".join(pieces[k : k + n]) == seg["text"]
        k += n


def test_cli_export_is_self_contained(runs_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    parser = cli.configure(argparse.ArgumentParser())
    args = parser.parse_args(
        [str(runs_dir), "--export", str(out), "--export-limit", "20", "--no-index-cache"]
    )
    assert cli.main(args) == 0
    assert "of 76 trajectories included" in capsys.readouterr().out
    html = out.read_text()
    assert "/static/" not in html and not re.search(r"(src|href)\s*=\s*[\"']https?://", html)
    data = json.loads(
        re.search(r"window\.TRAJLAB_EXPORT = (.*?);</script>", html, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    included = sum(len(v) for v in data["rows"].values())
    assert (
        included == 5 + 5 + 4 + 4 and "18 of 76 trajectories" in data["note"]
    )  # ceil(20 / 4) per run
    for rid, rows in data["rows"].items():
        for r in rows:
            assert f"/api/runs/{rid}/trajectory?ref={r['ref']}" in data["api"]
    steps = {r["step"] for r in data["rows"]["r1"]}
    assert len(steps) >= 4  # spread over training, not only step 1


def test_cli_errors_and_module_entry(tmp_path, capsys):
    parser = cli.configure(argparse.ArgumentParser())
    assert cli.main(parser.parse_args([str(tmp_path / "nope")])) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert cli.main(parser.parse_args([str(tmp_path)])) == 2  # an empty directory holds no run
    assert "neither a run directory" in capsys.readouterr().err
    run = make_eval_run(tmp_path / "e", n_examples=2, samples=1)
    assert cli.main(parser.parse_args([str(run), "--alarm", "bogus=1"])) == 2
    assert "bad alarm threshold" in capsys.readouterr().err
    r = subprocess.run(
        [sys.executable, "-m", "trajlab.viewer", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "--export" in r.stdout and "127.0.0.1" in r.stdout


def test_compare_api_pairs_the_shared_examples(server):
    app, url = server
    ids = {r["name"]: r["id"] for r in app.list_runs()["runs"]}
    a, b = ids["eval"], ids["train/eval/step_000008"]
    code, body = get(f"{url}/api/compare?a={a}&b={b}")
    assert code == 200 and body["shared"] == 4 and body["only_a"] == 6
    acc = next(m for m in body["metrics"] if m["metric"] == "accuracy")
    lo, hi = acc["ci"]
    assert lo <= acc["diff"] <= hi and acc["within_noise"] == (lo <= 0 <= hi)
    # the same numbers as the command line's compare_runs
    from trajlab.eval.compare import compare_runs

    direct = compare_runs(app.run(a).path, app.run(b).path)
    assert body["metrics"] == json.loads(json.dumps(direct["metrics"]))
    # a training run stands for its newest evaluation
    code, body2 = get(f"{url}/api/compare?a={a}&b={ids['train']}")
    assert code == 200 and body2["metrics"] == body["metrics"]
    code, err = get(f"{url}/api/compare?a={a}")
    assert code == 400 and "compare needs ?a=RUN&b=RUN" in err["error"]
