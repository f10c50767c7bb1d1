"""Unit tests for trajlab.viewer.alarms: hand-built metrics where each alarm fires, and one where none does."""

from __future__ import annotations

import pytest

from trajlab.viewer.alarms import ALARMS, AlarmConfig, alarm_config_from_overrides, check_alarms


def healthy(n: int = 12) -> list[dict]:
    """A run going well: accuracy and eval accuracy rise together, tools used steadily."""
    rows = []
    for s in range(1, n + 1):
        rows.append(
            {
                "step": s,
                "time": 10.0 * s,
                "accuracy": 0.3 + 0.02 * s,
                "reward/format/mean": 0.1,
                "tool_call_rate": 0.8,
                "response_length/mean": 200.0 + s,
                "stop_reason/length": 0.05,
                "stop_reason/error": 0.01,
                "entropy": 0.6 - 0.01 * s,
                "mismatch/kl_k3": 0.002,
                "groups/zero_variance": 0.5,
            }
        )
    for s in (4, 8, 12):
        rows[s - 1]["eval/accuracy"] = 0.3 + 0.02 * s  # tracks train accuracy exactly
    return rows


def names(rows: list[dict], cfg: AlarmConfig | None = None) -> set[str]:
    return {a.name for a in check_alarms(rows, cfg)}


def test_healthy_run_has_no_alarm():
    assert check_alarms(healthy()) == []


def test_too_few_rows_fire_nothing():
    rows = healthy()[:3]
    for r in rows:
        r["tool_call_rate"] = 0.0
    assert names(rows) == set()


def test_tool_call_rate_collapse():
    rows = healthy()
    # rates: 0.8 x 6 then 0.1 x 6 -> peak 5-step mean 0.8, last 5-step mean 0.1
    for r in rows[6:]:
        r["tool_call_rate"] = 0.1
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["tool_call_rate_collapse"]
    a = alarms[0]
    assert (
        a.step == 12
        and a.evidence["peak"] == pytest.approx(0.8)
        and a.evidence["recent"] == pytest.approx(0.1)
    )
    assert a.severity == "warning"  # 0.1 > 0.8 * 0.1, so not critical
    assert "tool_call_rate" in str(a)


def test_tool_rate_that_never_mattered_does_not_collapse():
    rows = healthy()
    for i, r in enumerate(rows):
        r["tool_call_rate"] = 0.1 if i < 6 else 0.0  # peak 0.1 < tool_rate_min_peak 0.2
    assert names(rows) == set()


def test_format_up_accuracy_down():
    rows = healthy()
    for i, r in enumerate(rows):
        r["reward/format/mean"] = 0.1 + 0.05 * i  # early mean (i=0..4) 0.2, recent (i=7..11) 0.55
        r["accuracy"] = 0.5 - 0.02 * i  # early mean 0.46, recent mean 0.32
        if "eval/accuracy" in r:
            r["eval/accuracy"] = r["accuracy"]
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["format_up_accuracy_down"]
    ev = alarms[0].evidence
    assert ev["format_early"] == pytest.approx(0.2) and ev["format_recent"] == pytest.approx(0.55)
    assert ev["accuracy_early"] == pytest.approx(0.46) and ev["accuracy_recent"] == pytest.approx(
        0.32
    )


def test_train_eval_divergence():
    rows = healthy()
    for s in (4, 8, 12):
        rows[s - 1]["eval/accuracy"] = 0.35  # flat while train accuracy climbs 0.34 -> 0.54
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["train_eval_divergence"]
    ev = alarms[0].evidence
    # train value at an eval step: mean of the 5 train points up to it
    assert ev["train_first"] == pytest.approx((0.32 + 0.34 + 0.36 + 0.38) / 4)
    assert ev["train_last"] == pytest.approx(sum(0.3 + 0.02 * s for s in range(8, 13)) / 5)
    assert ev["eval_first"] == ev["eval_last"] == 0.35


def test_response_length_explosion():
    rows = healthy()
    for i, r in enumerate(rows):
        r["response_length/mean"] = 200.0 if i < 6 else 600.0
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["response_length_explosion"]
    assert alarms[0].evidence == {"early": 200.0, "recent": 600.0}


def test_truncated_or_errored_fires_on_either():
    rows = healthy()
    for r in rows[-5:]:
        r["stop_reason/length"] = 0.2
        r["stop_reason/context_overflow"] = 0.15  # summed: 0.35 >= 0.3
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["truncated_or_errored"]
    assert alarms[0].evidence["truncated"] == pytest.approx(0.35)
    rows = healthy()
    rows[-1]["stop_reason/tool_error"] = 1.0  # recent mean of errored: (4 * 0.01 + 1.01) / 5 = 0.21
    alarms = check_alarms(rows)
    assert [a.name for a in alarms] == ["truncated_or_errored"]
    assert alarms[0].evidence["errored"] == pytest.approx(0.21)


def test_truncated_works_on_a_single_eval_row():
    assert names([{"stop_reason/length": 0.5}]) == {"truncated_or_errored"}


def test_thresholds_are_configurable():
    rows = healthy()
    for i, r in enumerate(rows):
        r["response_length/mean"] = 200.0 if i < 6 else 600.0
    assert names(rows, alarm_config_from_overrides(["length_factor=4"])) == set()
    assert names(rows, AlarmConfig(length_factor=2.5)) == {"response_length_explosion"}


def test_bad_override_names_the_valid_fields():
    with pytest.raises(ValueError, match="tool_rate_drop"):
        alarm_config_from_overrides(["nonsense=1"])
    with pytest.raises(ValueError, match="takes a float"):
        alarm_config_from_overrides(["tool_rate_drop=abc"])


def test_registry_and_unsorted_input():
    assert set(ALARMS) == {
        "tool_call_rate_collapse",
        "format_up_accuracy_down",
        "train_eval_divergence",
        "response_length_explosion",
        "truncated_or_errored",
        "entropy_collapse",
        "logprob_mismatch",
        "no_learning_signal",
    }
    rows = healthy()
    for r in rows[6:]:
        r["tool_call_rate"] = 0.0
    assert names(list(reversed(rows))) == {"tool_call_rate_collapse"}
    assert check_alarms(rows)[0].severity == "critical"
    assert check_alarms(rows)[0].to_dict()["name"] == "tool_call_rate_collapse"


def test_entropy_collapse():
    rows = healthy()
    for r in rows[-5:]:
        r["entropy"] = 0.06  # early mean ~0.57: fell below 20 %
    (alarm,) = [a for a in check_alarms(rows) if a.name == "entropy_collapse"]
    assert alarm.evidence["recent"] == pytest.approx(0.06) and "exploring" in alarm.message
    rows = healthy()
    for r in rows[-5:]:
        r["entropy"] = 0.3  # about half: not a collapse
    assert "entropy_collapse" not in names(rows)


def test_logprob_mismatch():
    rows = healthy()
    assert "logprob_mismatch" not in names(rows)
    for r in rows[-5:]:
        r["mismatch/kl_k3"] = 0.3
    (alarm,) = [a for a in check_alarms(rows) if a.name == "logprob_mismatch"]
    assert alarm.severity == "critical" and "decode dtype" in alarm.message
    # one step alone does not fire when the window mean stays low
    rows = healthy()
    rows[-1]["mismatch/kl_k3"] = 0.1
    assert "logprob_mismatch" not in names(rows)


def test_no_learning_signal_needs_several_steps_in_a_row():
    rows = healthy()
    rows[-2]["groups/zero_variance"] = rows[-1]["groups/zero_variance"] = 1.0
    assert "no_learning_signal" not in names(rows)  # two steps: not yet
    rows[-3]["groups/zero_variance"] = 1.0
    (alarm,) = [a for a in check_alarms(rows) if a.name == "no_learning_signal"]
    assert alarm.step == 12 and "advantage was 0" in alarm.message
