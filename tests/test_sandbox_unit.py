"""Unit tests of the sandbox's pure parts: framing, config validation, status mapping,
observation formatting, mode enforcement. No sandbox is started here."""

from __future__ import annotations

import base64
import os
import struct
import time

import pytest

from trajlab.tools import sandbox as sb
from trajlab.tools import sandbox_zygote as zy
from trajlab.tools.python import PythonToolConfig, _bad_args, format_observation
from trajlab.tools.sandbox import Capabilities, Layer, SandboxConfig, SandboxResult


def test_frame_round_trip_and_limits():
    r, w = os.pipe()
    zy.write_frame(w, {"nonce": "n1", "stdout": "é\x00"})
    assert zy.read_frame(r) == {"nonce": "n1", "stdout": "é\x00"}
    os.write(w, struct.pack(">I", 10_000))  # a header promising more than the limit
    with pytest.raises(ValueError, match="exceeds"):
        zy.read_frame(r, limit=100)
    os.close(w)
    assert zy.read_frame(r) is None  # clean EOF
    os.close(r)


def test_frame_truncated_and_deadline():
    r, w = os.pipe()
    os.write(w, struct.pack(">I", 50) + b"{")
    with pytest.raises(TimeoutError):
        zy.read_frame(r, deadline=time.monotonic() + 0.05)
    os.close(w)
    os.close(r)
    r, w = os.pipe()
    os.write(w, struct.pack(">I", 50) + b"{")
    os.close(w)
    with pytest.raises(EOFError, match="inside a frame"):
        zy.read_frame(r)
    os.close(r)


def test_frame_rejects_non_object():
    r, w = os.pipe()
    data = b"[1, 2]"
    os.write(w, struct.pack(">I", len(data)) + data)
    with pytest.raises(ValueError, match="not a JSON object"):
        zy.read_frame(r)
    os.close(r)
    os.close(w)


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("timeout_s", 0, "timeout_s"),
        ("output_cap_bytes", 2 << 20, "output_cap_bytes"),
        ("cgroup", "v3", "cgroup"),
        ("pids", 0, "pids"),
    ],
)
def test_config_validation_names_the_field(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        SandboxConfig(**{field: value})


def test_messages_round_trip_through_frames():
    r, w = os.pipe()
    req = zy.SessionRun("n1", sid="ab", code="print(1)", timeout_s=2, output_cap=100)
    zy.send(w, req)
    got = zy.receive(r)
    assert isinstance(got, zy.SessionRun)
    assert (got.nonce, got.sid, got.code) == ("n1", "ab", "print(1)")
    assert (got.timeout_s, got.output_cap) == (2, 100)
    zy.send(w, zy.Pong("n2", runs=3, session_pids=[5]))
    pong = zy.receive(r)
    assert (pong.runs, pong.spare_pid, pong.session_pids) == (3, None, [5])
    os.close(w)
    assert zy.receive(r) is None
    os.close(r)


@pytest.mark.parametrize(
    "frame,msg",
    [
        ({"op": "launch", "nonce": "n"}, "unknown message op 'launch'"),
        ({"nonce": "n"}, "unknown message op None"),
        ({"op": "run", "nonce": "n", "timeout_s": 1, "limits": {}}, "needs the field 'output_cap'"),
        (
            {"op": "run", "timeout_s": "1", "output_cap": 1, "limits": {}},
            "field 'timeout_s' of a 'run' message must be int/float, not str",
        ),
        ({"op": "run", "timeout_s": True, "output_cap": 1, "limits": {}}, "timeout_s"),
        ({"op": "ping", "nonce": 7}, "nonce"),
        ({"op": "session_close", "sid": "x", "pid": 3}, "has no fields \\['pid'\\]"),
    ],
)
def test_malformed_messages_are_named(frame, msg):
    with pytest.raises(ValueError, match=msg):
        zy.decode(frame)


def _resp(**kw):
    base = {"stdout": "", "stderr": "", "exit_code": 0, "signal": None, "killed_for": None}
    base.update(kw)
    for k in ("stdout", "stderr"):
        base[k] = base64.b64encode(base[k].encode()).decode()
    return zy.Result("n", **base)


@pytest.mark.parametrize(
    "resp,status",
    [
        (_resp(stdout="1\n"), "ok"),
        (_resp(exit_code=1, stderr="Traceback\nZeroDivisionError: x\n"), "error"),
        (_resp(exit_code=1, stderr="Traceback\nMemoryError\n"), "memory"),
        (_resp(exit_code=None, signal=9, killed_for="timeout"), "timeout"),
        (_resp(exit_code=None, signal=9, killed_for="output_limit"), "output_limit"),
        (_resp(exit_code=None, signal=9, oom_kill=True), "memory"),
        (_resp(exit_code=None, signal=11), "crashed"),
        (_resp(killed_for="gone", exit_code=None), "crashed"),
    ],
)
def test_status_mapping(resp, status):
    r = sb._to_result(resp)
    assert r.status == status
    assert r.truncated == (status == "output_limit")
    assert (r.error is None) == (status == "ok")


def test_setup_error_raises():
    with pytest.raises(sb.SandboxError, match="layer"):
        sb._to_result(_resp(setup_error="seccomp: OSError"))


def test_invalid_utf8_is_replaced():
    resp = _resp()
    resp.stdout = base64.b64encode(b"ok \xff\xfe").decode()
    assert sb._to_result(resp).stdout == "ok \ufffd\ufffd"


def test_observation_formatting():
    cfg = PythonToolConfig(traceback_lines=1, timeout_s=3)
    err = SandboxResult("error", stdout="partial", stderr="Traceback:\n  line\nValueError: bad\n")
    assert format_observation(err, cfg) == "partial\nValueError: bad"
    cfg2 = PythonToolConfig(traceback_lines=2)
    assert format_observation(err, cfg2) == "partial\n  line\nValueError: bad"
    assert format_observation(SandboxResult("ok", stdout="42\n", stderr="warn"), cfg) == "42\n"
    t = format_observation(SandboxResult("timeout", stdout="a\n"), cfg)
    assert t == "a\nTimeoutError: execution exceeded the 3 s time limit"
    m = format_observation(SandboxResult("memory", stderr="", error="cgroup OOM"), cfg)
    assert "MemoryError" in m
    reset = SandboxResult("timeout", session_reset=True)
    assert "session was restarted" in format_observation(reset, cfg)


def test_bad_args_are_data():
    for args in ({}, {"code": ""}, {"code": 3}, None, {"query": "x"}):
        r = _bad_args(args)
        assert r is not None and not r.ok and r.status == "bad_args"
    assert _bad_args({"code": "print(1)"}) is None


def test_capabilities_missing_and_summary():
    layers = {k: Layer(True, "fine") for k in sb.REQUIRED_UNTRUSTED}
    layers["uid_drop"] = Layer(False, "runs as uid 1000", "run as root")
    caps = Capabilities(layers, info={})
    assert caps.missing == ["uid_drop"]
    assert "uid_drop" in caps.summary() and "NO" in caps.summary()


def test_bind_paths_are_deduplicated_and_exclude_the_project():
    import sys

    binds = sb._bind_paths(sys.executable)
    assert "/usr" in binds
    for a in binds:
        for b in binds:
            assert a == b or not b.startswith(a.rstrip("/") + "/"), (a, b)
    project = os.path.dirname(os.path.dirname(os.path.abspath(sb.__file__)))
    assert project not in binds and not any(project.startswith(b + "/") for b in binds if b != "/")


def test_child_env_is_explicit():
    env = sb._child_env(SandboxConfig(extra_env={"FOO": "1"}), "/x/bin/python")
    assert env["PATH"].startswith("/x/bin:") and env["FOO"] == "1"
    assert env["OPENBLAS_NUM_THREADS"] == "1" and "PYTHONHASHSEED" in env
    assert not set(env) & {"HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY"}


def test_covers():
    assert sb._covers("/work", ["/work/main/.venv"])
    assert not sb._covers("/work/main/trajlab", ["/work/main/.venv"])


def test_shadowed_by_scratch_picks_interpreter_dirs_under_the_scratch_mounts():
    dirs = ["/usr", "/tmp/ci-1/main/.venv", "/var/tmp/py/", "/tmpfoo/.venv", "/dev/shm/v",
            "/sandbox/venv", "/root/.pyenv/versions/3.11.9"]  # fmt: skip
    assert zy.shadowed_by_scratch(dirs, minimal=False) == [
        "/tmp/ci-1/main/.venv", "/var/tmp/py", "/dev/shm/v"
    ]  # fmt: skip
    assert zy.shadowed_by_scratch(dirs, minimal=True)[-1] == "/sandbox/venv"
    # a scratch directory itself is never bound back: that would expose all of the host's /tmp
    assert zy.shadowed_by_scratch(["/tmp", "/tmp/", "/var/tmp", "/dev/shm"], minimal=True) == []


@pytest.mark.sandbox
@pytest.mark.skipif(
    os.geteuid() != 0 or not __import__("shutil").which("setpriv"), reason="needs root and setpriv"
)
def test_kill_uid_sweep_is_the_degraded_mode_fallback():
    import subprocess

    uid = 2_100_099_999  # outside every block a pool hands out by default
    p = subprocess.Popen(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "30"]
    )
    try:
        time.sleep(0.3)
        assert zy.kill_uid(uid) == 1
        assert p.wait(timeout=5) == -9
    finally:
        p.kill()


def _holding_probe() -> dict:
    ok = {k: "ok" for k in ("namespaces", "uid_map", "private_mounts", "private_proc", "tmpfs")}
    return {
        "steps": {**ok, "rlimits": "ok"},
        "resuid": [70001] * 3,
        "pid": 1,
        "visible_pids": [1],
        "net_ifaces": ["lo"],
        "inet_socket": "blocked: EPERM",
        "seccomp_mode": "2",
        "env_keys": ["PATH"],
        "proc_environ_keys": ["PATH"],
        "cwd": "/work",
        "cwd_bytes": 64 << 20,
        "minimal_root": True,
        "hidden_paths_visible": [],
        "cgroup": "0::/trajlab/pool-1/slot1",
        "rlimits": {"as": 1},
        "cap_eff": "0000000000000000",
        "cap_bnd": "0000000000000000",
        "no_new_privs": "1",
        "executable": "/usr/bin/python3",
        "executable_ok": True,
        "interpreter_exec": "ok",
        "writable_sys_path": [],
    }


def _assess(probe: dict, slot_info: dict | None = None, **cfg):
    from types import SimpleNamespace

    pool = SimpleNamespace(
        config=SandboxConfig(**cfg),
        _uids=SimpleNamespace(first=70000),
        python="/usr/bin/python3",
        _cg_kind="v2",
        uids=lambda: [70000, 70001],
    )
    info = {"landlock_abi": 3, **(slot_info or {})}
    slot = SimpleNamespace(index=1, unit={"kind": "v2"}, info=info)
    return sb._assess(probe, pool, slot)


def test_assess_all_layers_hold_on_a_clean_probe():
    caps = _assess(_holding_probe())
    assert [k for k, layer in caps.layers.items() if not layer.ok] == []
    assert caps.missing == []
    assert list(caps.layers)[:3] == ["process_per_run", "outside_timeout", "uid_drop"]


@pytest.mark.parametrize(
    "change,failed,detail",
    [
        ({"resuid": [0, 0, 0]}, {"uid_drop"}, "runs as uid 0"),
        ({"net_ifaces": ["lo", "eth0"]}, {"net_namespace"}, "eth0"),
        (
            {"net_ifaces": ["lo", "eth0"], "inet_socket": "created"},
            {"net_namespace", "seccomp_socket_filter", "network_blocked"},
            "socket filter only (created)",
        ),
        ({"env_keys": ["PATH", "AWS_SECRET"]}, {"env_scrubbed"}, "AWS_SECRET"),
        ({"hidden_paths_visible": ["/root"]}, {"minimal_root"}, "VISIBLE: ['/root']"),
        ({"cap_eff": "00000000000000ff"}, {"caps_dropped"}, "CapEff 00000000000000ff"),
        ({"writable_sys_path": ["/site"]}, {"site_packages_readonly"}, "WRITABLE"),
        ({"seccomp_mode": "0"}, {"seccomp"}, "Seccomp mode 0"),
    ],
)
def test_assess_names_the_failing_layer(change, failed, detail):
    caps = _assess({**_holding_probe(), **change})
    assert {k for k, layer in caps.layers.items() if not layer.ok} == failed
    assert any(detail in caps.layers[k].detail for k in failed)
    assert all(caps.layers[k].fix for k in failed)


def test_assess_cgroup_seen_from_inside_a_cgroup_namespace():
    probe = {**_holding_probe(), "cgroup": "4:memory:/\n8:pids:/\n0::/\n"}
    assert not _assess(probe).holds("cgroup")  # "/" alone proves nothing
    joined = {"cgroup": "4:memory:/trajlab/pool-9-ab/slot1\n0::/\n"}  # the zygote, in slot1
    assert _assess(probe, slot_info=joined).holds("cgroup")
    elsewhere = {"cgroup": "4:memory:/trajlab/pool-9-ab/slot2\n"}
    assert not _assess(probe, slot_info=elsewhere).holds("cgroup")


def test_assess_loopback_counts_the_seccomp_layer_as_the_socket_filter():
    caps = _assess({**_holding_probe(), "inet_socket": "created"}, allow_loopback=True)
    assert caps.holds("seccomp_socket_filter")


def test_observation_escapes_control_characters():
    r = SandboxResult("ok", stdout="\x1b[2J\x1b[31mred\r\x00 ok\ttab\n\x7f\x85")
    obs = format_observation(r, PythonToolConfig())
    assert obs == "\\x1b[2J\\x1b[31mred\\r\\x00 ok\ttab\n\\x7f\\x85"
    assert format_observation(r, PythonToolConfig(raw_output=True)) == r.stdout
    err = SandboxResult("error", stderr="Traceback\nValueError: \x1b]0;pwned\x07\n", error="x")
    assert format_observation(err, PythonToolConfig()) == "ValueError: \\x1b]0;pwned\\x07"
