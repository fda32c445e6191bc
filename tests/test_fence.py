"""The dangerous code stays fenced: only the modules listed here may load ctypes or mmap,
or fork, exec, _exit, spawn, close ranges of descriptors, prctl or unshare, and each of
them says why it is safe (a "Safety argument" section in its docstring).

Adding a module to the list is a decision, made in review: the list is the fence.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("sandbox", "channels", "orchestrator")
#: What counts as dangerous: these modules, and calls of these names (os.fork(), fork()...).
MODULES = frozenset({"ctypes", "mmap"})
CALLS = frozenset({
    "fork", "forkpty", "execve", "execv", "execvp", "execvpe", "execl", "execlp", "_exit",
    "Popen", "closerange", "prctl", "_prctl", "unshare", "posix_spawn", "posix_spawnp",
    "syscall", "set_child_subreaper",
})  # fmt: skip
#: The fence: the only modules that may, each with its reason to.
ALLOWED = {
    "sandbox/_kernel.py": "the raw syscall and prctl callers, seccomp loading",
    "sandbox/_kernel_ns.py": "unshare, mount, pivot_root, capabilities",
    "sandbox/_kernel_trace.py": "the tracer's child: load a filter, hand over, exec",
    "sandbox/_landlock_sys.py": "the Landlock syscalls",
    "orchestrator/_core/isolate_main.py": "the isolate's main: ends with _exit",
    "orchestrator/_core/orphans.py": "subreaper prctl, killing a process tree",
    "orchestrator/_core/spawn.py": "starts isolate interpreters",
    "orchestrator/_core/fork_server.py": "forks an isolate per call from a clean interpreter",
    "orchestrator/_namespaces/enter.py": "unshare: enters the namespaces",
    "orchestrator/_namespaces/pid.py": "forks the pid-1 mirror, closes its descriptors",
    "orchestrator/_cli/run_exec.py": "isolates run: apply, then exec (built or cached)",
    "orchestrator/_commands.py": "run and Popen: start isolates run for one command",
    "orchestrator/_cli/run_limits.py": "isolates run under limits: fork, wait, report",
    "orchestrator/_cli/run_report.py": "isolates run by default: fork, take the listener, answer",
    "orchestrator/_cli/run_processes.py": "run --processes: subreaper, takes the listener",
    "orchestrator/_cli/trace.py": "isolates trace: forks the traced program",
    "orchestrator/_core/resources.py": "what a call names: a socket's type through pidfd_getfd",
    "orchestrator/testing.py": "in_child: fork, report through shared memory, _exit",
}


def _dangerous(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & MODULES
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES:
            found.add(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in CALLS:
                found.add(f"{name}()")
    return found


def _modules() -> dict[str, set[str]]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            reasons = _dangerous(path)
            if reasons:
                found[str(path.relative_to(ROOT))] = reasons
    return found


def test_only_the_fenced_modules_use_raw_calls() -> None:
    outside = {m: sorted(r) for m, r in _modules().items() if m not in ALLOWED}
    assert outside == {}, "raw calls outside the fence: move them, or fence the module"


def test_every_fenced_module_carries_its_safety_argument() -> None:
    missing = []
    for module in ALLOWED:
        path = ROOT / module
        assert path.exists(), f"{module} is fenced but gone: update the fence"
        if "Safety argument" not in (ast.get_docstring(ast.parse(path.read_text())) or ""):
            missing.append(module)
    assert missing == []


def test_the_fence_lists_nothing_that_does_not_need_it() -> None:
    assert set(ALLOWED) <= set(_modules()), "a fenced module no longer makes raw calls"
