"""The sandbox package runs on the standard library alone: no libseccomp, no pyseccomp, no
third-party module, whether it builds, compiles or applies a policy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "orchestrator" / "demo.py"
POLICY_FUNCTIONS = ("server_policy", "writer_policy", "supervisor_policy")


def _demo_policy_source() -> str:
    """The demo's own policy functions, read from its source (the demo module itself
    imports msgspec, which the orchestrator needs and the sandbox does not)."""
    tree = ast.parse(DEMO.read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in POLICY_FUNCTIONS]
    assert len(found) == len(POLICY_FUNCTIONS)
    return "\n\n".join(ast.unparse(f) for f in found)


CHILD = """
import json, os, sys, tempfile
before = set(sys.modules)  # what the interpreter's start-up (site) brought, not isolates
sys.modules["pyseccomp"] = None  # importing it would fail: nothing may try
from isolates.sandbox import Action, Landlock, Networking, Policy, SystemIO, Threads, profiles
{functions}

directory = tempfile.mkdtemp()
policies = [server_policy(8080), writer_policy(directory), supervisor_policy(8080, directory),
            profiles.pledge("stdio rpath inet dns"), profiles.systemd("@system-service")]
sizes = [len(p.compile().bpf) for p in policies]
statuses = []
for policy in policies:
    pid = os.fork()
    if pid == 0:
        policy.apply()
        os._exit(0)
    statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
own = os.path.dirname(os.path.dirname(sys.modules["isolates.sandbox"].__file__))
stdlib = os.path.dirname(os.__file__)
outside = sorted(
    name for name, module in list(sys.modules.items())
    if name not in before and getattr(module, "__file__", None)
    and not module.__file__.startswith((own, stdlib))
    and not name.startswith("isolates")
)
print(json.dumps({{"sizes": sizes, "statuses": statuses, "outside": outside,
                   "libseccomp": "libseccomp" in open("/proc/self/maps").read()}}))
"""


def test_the_sandbox_builds_compiles_and_applies_with_the_standard_library_only() -> None:
    code = CHILD.format(functions=_demo_policy_source())
    out = subprocess.run([sys.executable, "-I", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert all(size > 0 for size in report["sizes"])
    assert report["statuses"] == [0] * 5  # each applied cleanly in a real child
    assert report["outside"] == []  # no third-party module was imported
    assert report["libseccomp"] is False
