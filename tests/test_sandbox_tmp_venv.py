"""The sandbox run from a venv that lives under /tmp or /var/tmp, as on a CI machine that
clones the repo into /tmp/ci-XXXX/main and creates /tmp/ci-XXXX/main/.venv.

Every sandbox mounts a fresh tmpfs on /tmp, /var/tmp and /dev/shm, which would hide such
an interpreter. The zygote binds the venv back, read-only, at its own path over the
fresh tmpfs; nothing else of the host's temp dirs may appear. The venv is built offline
once per temp dir (`python -m venv --without-pip`, then numpy, sympy, mpmath and
pyseccomp hard-linked or copied from this interpreter's site-packages, and a .pth with
the repo root, as an editable install does), inside a mode-0700 mkdtemp directory like
CI's, next to a canary file and a "project" file that must stay invisible.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "sympy", "mpmath", "pyseccomp")  # what the zygote imports
CANARY = "trajlab-tmp-venv-canary-7f3a"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same filesystem: instant, no extra disk
    except OSError:
        shutil.copy2(src, dst)


def _install_offline(site: Path) -> None:
    """Put PACKAGES (and numpy's bundled libraries) into `site` from this interpreter."""
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            pytest.skip(f"{name} is not installed in {sys.prefix}, so the /tmp venv cannot get it")
        if spec.submodule_search_locations:  # a package directory
            src = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(src, site / src.name, copy_function=_link_or_copy)
            libs = src.parent / f"{src.name}.libs"  # auditwheel's bundled shared libraries
            if libs.is_dir():
                shutil.copytree(libs, site / libs.name, copy_function=_link_or_copy)
        else:  # a single module such as pyseccomp.py
            _link_or_copy(spec.origin, str(site / Path(spec.origin).name))
    (site / "trajlab-repo.pth").write_text(f"{REPO}\n")


@pytest.fixture(scope="module", params=["/tmp", "/var/tmp"])
def tmp_venv(request):
    """(venv python, the mkdtemp dir, host files that must stay invisible)."""
    top = request.param
    if not os.path.isdir(top) or not os.access(top, os.W_OK):
        pytest.skip(f"{top} is missing or not writable here")
    base = Path(tempfile.mkdtemp(prefix="trajlab-ci-", dir=top))  # mode 0700, as mktemp -d
    try:
        venv = base / "main" / ".venv"
        cp = subprocess.run(
            [sys._base_executable, "-m", "venv", "--without-pip", str(venv)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if cp.returncode != 0:
            pytest.skip(f"cannot create a venv offline with {sys._base_executable}: {cp.stderr}")
        site = Path(
            subprocess.check_output(
                [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                text=True,
            ).strip()
        )  # fmt: skip
        _install_offline(site)
        canary = base / "canary.txt"
        canary.write_text(CANARY)
        project = base / "main" / "tests" / "hidden_answers.txt"
        project.parent.mkdir()
        project.write_text(CANARY)
        yield venv / "bin" / "python", base, [canary, project]
    finally:
        shutil.rmtree(base, ignore_errors=True)


INSIDE = r"""
import json, os, subprocess, sys
site = [p for p in sys.path if p.endswith("site-packages")][0]
out = {"site": site, "listdirs": {}}
for d in ("/tmp", "/var/tmp", BASE, os.path.dirname(sys.prefix)):
    out["listdirs"][d] = sorted(os.listdir(d)) if os.path.isdir(d) else None
out["visible"] = [p for p in HIDDEN if os.path.exists(p)]
st = os.statvfs(site)
out["ro"], out["nosuid"], out["nodev"] = (bool(st.f_flag & f) for f in (1, 2, 4))
try:
    open(os.path.join(site, "evil.pth"), "w").write("import os\n")
    out["pth_write"] = "written"
except OSError as e:
    out["pth_write"] = type(e).__name__ + ": " + (e.strerror or "")
cp = subprocess.run([sys.executable, "-I", "-c", "import numpy, sympy; print(numpy.__file__)"],
                    capture_output=True, text=True)
out["subprocess"] = [cp.returncode, cp.stdout.strip(), cp.stderr[-300:]]
tmp = os.statvfs("/tmp")
out["tmp_bytes"] = tmp.f_blocks * tmp.f_frsize
with open("/tmp/left-by-run-1", "w") as f:
    f.write("x")
print(json.dumps(out))
"""

HOST = r"""
import json, sys
from trajlab.tools.sandbox import SandboxConfig, SandboxPool, SandboxUnavailable

hidden = tuple(json.loads(sys.argv[1]))
cfg = dict(slots=1, timeout_s=20, tmp_bytes=32 << 20, hidden_paths=hidden)
try:
    pool = SandboxPool(SandboxConfig(**cfg))
except SandboxUnavailable:
    pool = SandboxPool(SandboxConfig(**cfg, allow_insecure=True))
with pool:
    caps = pool.capabilities()
    res = {"caps": {k: [v.ok, v.detail] for k, v in caps.layers.items()}}
    res["print"] = pool.run("print(1)").stdout
    res["imports"] = pool.run("import numpy, sympy; print(numpy.ones(2).sum())").stdout
    r = pool.run(sys.argv[2])
    res["inside"], res["stderr"] = r.stdout, r.stderr
    res["second"] = pool.run("import os; print(os.path.exists('/tmp/left-by-run-1'))").stdout
    with pool.session() as s:
        res["session"] = s.run("import numpy; print(numpy.__name__)").stdout
print("RESULT " + json.dumps(res))
"""


def test_sandbox_from_a_venv_under_a_temp_dir(tmp_venv):
    python, base, hidden = tmp_venv
    inside = INSIDE.replace("BASE", repr(str(base))).replace(
        "HIDDEN", repr([str(h) for h in hidden])
    )
    cp = subprocess.run(
        [str(python), "-c", textwrap.dedent(HOST), json.dumps([str(h) for h in hidden]), inside],
        capture_output=True, text=True, timeout=300, cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.path.expanduser("~")},
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-3000:]
    line = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT ") :])
    caps = {k: v[0] for k, v in res["caps"].items()}
    if not (caps["mount_namespace"] and caps["tmpfs_scratch"]):
        pytest.skip(f"no private mounts here, so the sandbox shares the host's temp dirs: {res['caps']['mount_namespace']}")  # fmt: skip
    assert caps["interpreter_usable"], res["caps"]["interpreter_usable"]
    assert caps["site_packages_readonly"], res["caps"]["site_packages_readonly"]
    assert caps["minimal_root"] or not caps["mount_namespace"], res["caps"]["minimal_root"]
    assert str(python.parent.parent) in res["caps"]["tmpfs_scratch"][1]  # bound back
    assert res["print"] == "1\n"
    assert res["imports"] == "2.0\n"
    assert res["session"] == "numpy\n"
    assert res["inside"], res["stderr"][-2000:]
    inside = json.loads(res["inside"])
    venv_top = str(python.parent.parent)
    # The fresh temp dir holds only the path down to the venv, the other one nothing...
    other = "/var/tmp" if str(base.parent) == "/tmp" else "/tmp"
    assert inside["listdirs"][str(base.parent)] == [base.name]
    assert inside["listdirs"][other] == []
    assert inside["listdirs"][str(base)] == ["main"]  # no canary.txt
    assert inside["listdirs"][os.path.dirname(venv_top)] == [".venv"]  # no tests/
    # ...its size cap is this pool's, and nothing of the host's temp dirs is visible.
    assert inside["tmp_bytes"] == 32 << 20
    assert inside["visible"] == []
    assert CANARY not in res["inside"]
    # The venv is usable by a fresh interpreter inside, and read-only, nosuid, nodev.
    rc, out, err = inside["subprocess"]
    assert rc == 0 and out.startswith(venv_top), err
    assert inside["ro"] and inside["nosuid"] and inside["nodev"]
    assert inside["pth_write"].startswith(("OSError", "PermissionError")), inside["pth_write"]
    assert not (Path(inside["site"]) / "evil.pth").exists()
    assert res["second"] == "False\n"  # each run gets a fresh /tmp
