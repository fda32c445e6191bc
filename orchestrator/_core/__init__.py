"""The isolate machinery both journeys share (an ``@isolate`` call and a Supervisor's
worker): starting interpreters and talking to them, and the isolate's own main.

- ``wire``: the control protocol (Boot, Ready, Result, Failure, ...), typed;
- ``boot_message``: building the Boot message; ``encode``: what crosses the boundary
  (pickle in, msgspec data out); ``policies``: the syscalls the orchestrator itself
  needs in an isolate (and a confined supervisor);
- ``spawn``: the fork/exec of a fresh interpreter; ``process``: one isolate as its
  parent sees it; ``pool``: warm idle interpreters; ``monitor``: the thread that turns
  seccomp notifications into IsolateViolation; ``logs``: an isolate's log records,
  bounded; ``orphans``: ending whatever an isolate started; ``runtime``: the one
  instance of each process-wide piece, and the one at-fork hook that resets them;
- ``isolate_main``: the isolate's main; ``context`` (WorkerContext) and ``functions``:
  the worker's side of a run; ``errors``: WorkerFailed and its kin.

Rules (tests/orchestrator/test_layout.py): nothing here imports a front door (the flat modules of
isolates.orchestrator) nor the command line; it may import ``_namespaces``.
"""
