"""Browser tests: Debian's chromium, headless, driven by Playwright (no downloaded browser).

They open a generated run, check a trajectory's tool call and loss mask against the
data, apply a filter, open a comparison, check alarms render, open an exported report,
and save screenshots under test-artifacts/viewer/. With TRAJLAB_UPDATE_DOCS_IMG=1 the
screenshots are also copied to docs/img/ (how the images in docs/viewer.md are made).

Skipped only when /usr/bin/chromium is absent (`apt-get install chromium`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from trajlab.types import read_jsonl
from trajlab.viewer.export import write_report
from trajlab.viewer.runs import discover
from trajlab.viewer.server import ViewerApp, serve_in_thread
from trajlab.viewer.synthetic import CHROMIUM, LAUNCH_ARGS, make_eval_run, make_train_run

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "viewer"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`",
    ),
]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TRAJLAB_UPDATE_DOCS_IMG") == "1":
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "docs" / "img" / f"viewer_{name}.png")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser_runs")
    make_train_run(root / "grpo_toy", steps=10, per_step=6, with_tokenizer=True)
    make_eval_run(root / "eval_toy", n_examples=12, samples=2)
    return root


@pytest.fixture(scope="module")
def base_url(runs_dir):
    srv, url = serve_in_thread(ViewerApp(discover([runs_dir], cache=False)))
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no `playwright install` needed)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()
    assert errors == [], f"errors in the page: {errors}"


def train_trajs(runs_dir: Path):
    return [
        t
        for p in sorted((runs_dir / "grpo_toy" / "trajectories").glob("*.jsonl"))
        for t in read_jsonl(p)
    ]


def test_runs_page_shows_runs_alarms_and_charts(page, base_url):
    page.goto(base_url + "/#/")
    page.wait_for_selector("#charts .chart canvas")
    rows = page.locator("#runs-table tr[data-run]")
    assert rows.count() == 4  # eval_toy, grpo_toy and its two periodic evaluations
    alarm = page.locator('.alarm[data-alarm="tool_call_rate_collapse"]')
    assert alarm.count() == 1 and "fell from a peak" in alarm.inner_text()
    titles = page.locator(".chart-title").all_inner_texts()
    for group in (
        "Reward components (mean)",
        "Accuracy and pass rates",
        "Tool calls",
        "Response length",
        "Entropy",
        "KL",
        "Filtered fractions",
        "Tokens per second",
        "Evaluation",
    ):
        assert group in titles
    assert page.locator("#eval-table tr").count() == 4  # header + three eval runs
    page.locator("#runs-table button", has_text="config.yaml").click()
    visible = page.locator("#runs-table pre:visible")
    assert visible.count() == 1 and "grpo" in visible.inner_text()
    page.locator("#runs-table button", has_text="config.yaml").click()
    shot(page, "runs")
    # clicking a point of a chart browses that step
    canvas = page.locator('.chart[data-chart="Tool calls"] canvas')
    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] - 14, "y": box["height"] / 2})
    assert "step 10" in page.locator('.chart[data-chart="Tool calls"] .chart-tip').inner_text()
    canvas.click(position={"x": box["width"] - 14, "y": box["height"] / 2})
    page.wait_for_selector("#browse-table")
    assert page.evaluate("location.hash").endswith("?step=10")


def test_browse_filter_trajectory_tool_call_and_masks(page, base_url, runs_dir):
    trajs = train_trajs(runs_dir)
    page.goto(base_url + "/#/browse/r1")
    page.wait_for_selector("#browse-table tr[data-ref]")
    assert page.locator("#page-info").inner_text() == f"1\u201350 of {len(trajs)}"
    shot(page, "browse")

    page.select_option('#filters select[name="tool_errors"]', "true")
    page.click('#filters button[type="submit"]')
    page.wait_for_function("location.hash.includes('tool_errors=true')")
    expected = [t for t in trajs if any(not c.ok for c in t.tool_calls)]
    page.wait_for_selector(f"#page-info:has-text('of {len(expected)}')")
    rows = page.locator("#browse-table tr[data-ref]")
    assert rows.count() == len(expected) > 0
    assert rows.locator("td:nth-child(2)").all_inner_texts() == [t.example_id for t in expected]

    rows.first.click()
    page.wait_for_selector("#trajectory .toolcall")
    t = expected[0]
    call = page.locator("#trajectory .toolcall").first
    assert call.locator("pre.args").inner_text() == t.tool_calls[0].args["code"]
    assert call.locator("pre.result").inner_text() == t.tool_calls[0].result
    assert f"error: {t.tool_calls[0].error}" in call.inner_text()
    assert page.locator("#trajectory .seg").count() == len(t.segments)

    page.select_option("#trajectory select.overlay", "mask")
    toks = page.locator("#trajectory .tok")
    assert toks.count() == len(t.token_ids)
    trained = page.eval_on_selector_all(
        "#trajectory .tok.m1", "els => els.map(e => Number(e.dataset.i))"
    )
    assert trained == [i for i, m in enumerate(t.loss_mask) if m == 1]
    # decoded pieces, concatenated per segment, give back the stored segment text
    first_seg = page.locator("#trajectory .seg").nth(2).locator(".tok").all_inner_texts()
    assert "".join(first_seg) == t.segments[2].text

    page.select_option("#trajectory select.overlay", "advantage")
    k = t.prompt_length + 1  # a trained model token
    page.locator(f'#trajectory .tok[data-i="{k}"]').hover()
    tip = page.locator("#tooltip").inner_text()
    adv = t.metadata["train"]["advantages"][k - t.prompt_length]
    assert (
        f"advantage {adv:g}" in tip.replace("advantage -", "advantage -") and "loss mask 1" in tip
    )
    shot(page, "trajectory")


def test_compare_same_example_across_steps(page, base_url, runs_dir):
    trajs = train_trajs(runs_dir)
    steps = {}
    for t in trajs:
        steps.setdefault(t.example_id, set()).add(t.metadata["train"]["step"])
    ex, seen = next((e, sorted(s)) for e, s in sorted(steps.items()) if len(s) >= 2)
    page.goto(base_url + f"/#/browse/r1?example={ex}&step={seen[0]}")
    page.wait_for_selector("#browse-table tr[data-ref]")
    page.locator("#browse-table tr[data-ref]").first.click()
    page.wait_for_selector("#compare-picker")
    page.select_option('#compare-picker select[name="run"]', "r1")
    page.wait_for_selector(
        f'#compare-picker select[name="step"] option[value="{seen[-1]}"]', state="attached"
    )
    page.select_option('#compare-picker select[name="step"]', str(seen[-1]))
    page.click("#compare-picker button")
    page.wait_for_selector("#compare-b .seg")
    a, b = (
        page.locator("#compare-a .side-label").inner_text(),
        page.locator("#compare-b .side-label").inner_text(),
    )
    assert f"step {seen[0]}" in a and f"step {seen[-1]}" in b
    for side in ("a", "b"):
        assert (
            page.locator(f"#compare-{side} .traj-head .kv").first.inner_text().replace("\n", "")
            == f"example{ex}"
        )
        assert page.locator(f"#compare-{side} .seg").count() > 0
    shot(page, "compare")


def test_compare_two_runs_with_paired_intervals(page, base_url):
    page.goto(base_url + "/#/")
    page.wait_for_selector("#compare-runs-picker")
    names = page.locator('#compare-runs-picker select[name="a"] option').all_inner_texts()
    assert "eval_toy" in names and any("step_000008" in n for n in names)
    page.select_option('#compare-runs-picker select[name="a"]', label="eval_toy")
    b = next(n for n in names if "step_000008" in n)
    page.select_option('#compare-runs-picker select[name="b"]', label=b)
    page.click("#compare-runs-picker button")
    page.wait_for_selector("#compare-runs tr[data-metric='accuracy']")
    row = page.locator("#compare-runs tr[data-metric='accuracy'] td").all_inner_texts()
    diff, (lo, hi) = float(row[3]), map(float, row[4].strip("[]").split(","))
    assert lo <= diff <= hi
    assert row[5] == ("within noise" if lo <= 0 <= hi else ("B higher" if diff > 0 else "B lower"))
    assert "4 shared examples" in page.locator("p.muted").first.inner_text()
    shot(page, "compare_runs")


def test_exported_report_opens_offline(page, runs_dir, tmp_path):
    out = tmp_path / "report.html"
    write_report(ViewerApp(discover([runs_dir], cache=False)), out, limit=30)
    page.route(
        "**/*",
        lambda route: (
            route.abort() if not route.request.url.startswith("file:") else route.continue_()
        ),
    )
    page.goto(out.as_uri() + "#/")
    page.wait_for_selector('.alarm[data-alarm="tool_call_rate_collapse"]')
    assert "exported report" in page.locator("#export-note").inner_text()
    page.goto(out.as_uri() + "#/browse/r1?correct=true")
    page.wait_for_selector("#browse-table tr[data-ref]")
    marks = page.locator("#browse-table tr[data-ref] td:nth-child(5)").all_inner_texts()
    assert marks and set(marks) == {"\u2713"}
    page.locator("#browse-table tr[data-ref]").first.click()
    page.wait_for_selector("#trajectory .seg")
    shot(page, "export")
