"""Nothing of one run reaches another through the fork server (issue 12, classes 1 and 2).

Every sandbox is forked from a template process that never handled a request, so neither
the interpreter's objects (frames, locals, the request loop's variables) nor freed memory of
the zygote carry an earlier run's code, input or output. Each probe plants a random token
in one run (in its code, its stdin and its output) and looks for it from a later one-shot
run and a later session: by walking the interpreter's frames and objects, and by reading the
whole address space through /proc/self/mem. The searching code never contains the token
(it matches a pattern), so it cannot find its own copy."""

from __future__ import annotations

import base64
import re
import secrets

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox

PREFIX = "PRISTINEPROBE"

# Looks for PREFIX + 24 hex digits everywhere in its own process: objects the collector
# tracks (their reprs), every live frame's locals, and the readable mappings of its memory.
SEARCH = r"""
import gc, re, sys
pat = re.compile(rb"PREFIX_HERE[0-9a-f]{24}")
found = set()
for f in list(sys._current_frames().values()):
    while f is not None:
        for v in list(f.f_locals.values()):
            found.update(pat.findall(repr(v).encode(errors="replace")))
        f = f.f_back
for o in gc.get_objects():
    if isinstance(o, (dict, list, tuple)):
        try:
            found.update(pat.findall(repr(o).encode(errors="replace")))
        except Exception:
            pass
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if not perms.startswith("r") or "[vvar" in line or "[vsyscall" in line:
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(lo)
            found.update(pat.findall(mem.read(hi - lo)))
        except (OSError, OverflowError, ValueError):
            pass
print(sorted(t.decode() for t in found))
""".replace("PREFIX_HERE", PREFIX)


def plant(token: str) -> tuple[str, bytes]:
    """Code that holds the token in a variable and prints it, and stdin that carries it."""
    code = f"secret = {token!r}\nimport sys\nprint(secret, sys.stdin.read())\n"
    return code, f"input {token}".encode()


def tokens_seen(result) -> set[str]:
    assert result.ok, result.stderr[-2000:]
    return {t[len(PREFIX) :] for t in re.findall(rf"{PREFIX}[0-9a-f]{{24}}", result.stdout)}


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(SandboxConfig(slots=1, timeout_s=30, preload=(), allow_insecure=True))
    caps = p.capabilities()
    if not (caps.holds("pid_namespace") and caps.holds("uid_drop")):
        p.close()
        pytest.skip("needs namespaces and the uid drop (self-check)")
    yield p
    p.close()


def _token() -> str:
    return secrets.token_hex(12)


@pytest.mark.parametrize("later", ["run", "run-after-fillers", "session"])
def test_one_shot_runs_leave_nothing_for_later_sandboxes(pool, later):
    tokens = [_token() for _ in range(3)]
    for t in tokens:
        code, stdin = plant(PREFIX + t)
        r = pool.run(code, stdin=stdin)
        assert PREFIX + t in r.stdout  # the token did pass through the zygote
    if later == "run-after-fillers":
        for _ in range(3):
            assert pool.run("x = 'filler' * 1000\nprint(len(x))").ok
    if later == "session":
        with pool.session() as s:
            seen = tokens_seen(s.run(SEARCH))
    else:
        seen = tokens_seen(pool.run(SEARCH))
    assert not seen & set(tokens), f"a later {later} found earlier runs' tokens"


@pytest.mark.parametrize("later", ["run", "session"])
def test_session_cells_leave_nothing_for_later_sandboxes(pool, later):
    token = _token()
    with pool.session() as s:
        code, _ = plant(PREFIX + token)
        assert PREFIX + token in s.run(code).stdout
    if later == "session":
        with pool.session() as s2:
            seen = tokens_seen(s2.run(SEARCH))
    else:
        seen = tokens_seen(pool.run(SEARCH))
    assert token not in seen


def test_the_search_finds_what_is_there(pool):
    """The probe is not blind: a token of the run itself is found, in objects and memory."""
    token = _token()
    hex_parts = base64.b16encode((PREFIX + token).encode()).decode().lower()
    code = f"mine = bytes.fromhex({hex_parts!r}).decode()\n" + SEARCH
    assert token in tokens_seen(pool.run(code))
