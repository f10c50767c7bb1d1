"""What a sandbox can learn about the host it runs on. The network identity is the
sandbox's own (hostname "sandbox", an /etc/hosts that names only localhost) and nothing a
program reads there names the host machine."""

from __future__ import annotations

import os
import re
import socket

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(SandboxConfig(slots=1, timeout_s=5, preload=(), allow_insecure=True))
    caps = p.capabilities()
    if not (caps.holds("minimal_root") and caps.holds("net_namespace")):
        p.close()
        pytest.skip("needs the minimal root and a network namespace (self-check)")
    yield p
    p.close()


@pytest.mark.parametrize(
    "code",
    [
        "print(open('/etc/hosts').read())",
        "import socket\nprint(socket.gethostname())",
        "import os\nprint(os.uname().nodename)",
        "print(open('/proc/sys/kernel/hostname').read())",
        "import socket\nprint(socket.getfqdn())",
    ],
    ids=["etc-hosts", "gethostname", "uname", "proc-hostname", "fqdn"],
)
def test_the_host_name_is_not_visible(pool, code):
    host = socket.gethostname()
    r = pool.run(code)
    assert r.ok, r.stderr
    assert not re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", r.stdout), r.stdout


def test_own_cgroup_is_the_root_of_a_cgroup_namespace(pool):
    if not pool.capabilities().holds("cgroup"):
        pytest.skip("needs the cgroup layer (self-check)")
    code = "print(open('/proc/self/cgroup').read())"
    for out in (pool.run(code).stdout, pool.session().run(code).stdout):
        lines = [ln for ln in out.splitlines() if ln]
        assert lines and all(ln.endswith(":/") for ln in lines), out  # no pool or trainer pid
        assert "pool-" not in out and str(os.getpid()) not in out


def test_localhost_still_resolves(pool):
    r = pool.run("import socket\nprint(socket.gethostbyname('localhost'))")
    assert r.stdout == "127.0.0.1\n", r.stderr


# Where trajlab's source tree lives: no program in a sandbox may learn it (the interpreter's
# own prefix, e.g. a venv, stays visible: it is where the sandbox's Python comes from).
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__import__("trajlab").__file__)))
SOURCE_PKG = os.path.join(SOURCE_TREE, "trajlab")

SOURCE_PROBES = {
    "cmdline": "print(open('/proc/self/cmdline', 'rb').read().decode())",
    "pid1-cmdline": "print(open('/proc/1/cmdline', 'rb').read().decode())",
    "orig-argv": "import sys\nprint(sys.orig_argv, sys.argv)",
    "sys-path": "import sys\nprint(sys.path, list(sys.path_importer_cache))",
    "module-files": (
        "import sys\n"
        "print([getattr(m, '__file__', '') for m in list(sys.modules.values())])\n"
        "print([vars(m).get('MAPPING') for m in list(sys.modules.values())])"
    ),
    "meta-path": "import sys\nprint([repr(f) for f in sys.meta_path], [repr(h) for h in sys.path_hooks])",
    "install-records": (
        "import glob, os, sys\n"
        "for d in [p for p in sys.path if p.endswith('site-packages')]:\n"
        "    for p in glob.glob(os.path.join(d, '*')) + glob.glob(os.path.join(d, '*.dist-info', '*')):\n"
        "        if os.path.isfile(p) and p.endswith(('.pth', '.py', '.json', '.egg-link')):\n"
        "            text = open(p, errors='replace').read()\n"
        "            print(p, text[:5000] if 'trajlab' in text else '')\n"
    ),
    "environ": "print(open('/proc/self/environ', 'rb').read().decode(errors='replace'))",
    "maps": "print(open('/proc/self/maps').read())",
}


@pytest.mark.parametrize("code", list(SOURCE_PROBES.values()), ids=list(SOURCE_PROBES))
def test_the_source_tree_is_not_named(pool, code):
    for r in (pool.run(code), pool.session().run(code)):
        assert r.ok, r.stderr
        assert SOURCE_PKG not in r.stdout, r.stdout[:2000]
        assert "sandbox_zygote.py" not in r.stdout
