"""isolates.sandbox: what a thread or process may do, as seccomp-BPF and Landlock.

Build a :class:`Policy` from RuleSets, then ``policy.apply()`` (this thread),
``policy.apply(all_threads=True)`` or ``policy.run(fn)`` (a new confined thread).
"""

from ._builtins_io import SystemIO as SystemIO
from ._builtins_net import Networking as Networking
from ._builtins_proc import Pipes as Pipes
from ._builtins_proc import Processes as Processes
from ._builtins_proc import PythonRuntime as PythonRuntime
from ._builtins_proc import Signals as Signals
from ._builtins_proc import Threads as Threads
from ._builtins_proc import Time as Time
from ._compiled import CompiledPolicy as CompiledPolicy
from ._compiled import Status as Status
from ._errors import PolicyError as PolicyError
from ._errors import SandboxError as SandboxError
from ._landlock import Compat as Compat
from ._landlock import Landlock as Landlock
from ._policy import ALWAYS_DENIED as ALWAYS_DENIED
from ._policy import Policy as Policy
from ._rules import SELF_PID as SELF_PID
from ._rules import Action as Action
from ._rules import Arg as Arg
from ._rules import Rule as Rule
from ._ruleset import RuleSet as RuleSet

__all__ = [
    "ALWAYS_DENIED", "SELF_PID", "Action", "Arg", "Compat", "CompiledPolicy", "Landlock",
    "Networking", "Pipes", "Policy", "PolicyError", "Processes", "PythonRuntime", "Rule",
    "RuleSet", "SandboxError", "Signals", "Status", "SystemIO", "Threads", "Time",
]  # fmt: skip
