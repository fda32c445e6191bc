"""isolates.sandbox: what a thread or process may do, as seccomp-BPF and Landlock.

Build a :class:`Policy` from RuleSets, then ``policy.apply()`` (this thread),
``policy.apply(all_threads=True)`` or ``policy.run(fn)`` (a new confined thread).
"""

from ._lazy import lazy_exports

TYPE_CHECKING = False  # not typing's: an isolate imports this package before it is confined
if TYPE_CHECKING:
    from . import profiles as profiles
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
    from ._landlock import Landlock as Landlock
    from ._landlock_abi import AccessFs as AccessFs
    from ._landlock_abi import AccessNet as AccessNet
    from ._landlock_abi import Scope as Scope
    from ._landlock_plan import Compat as Compat
    from ._landlock_plan import Enforcement as Enforcement
    from ._landlock_plan import LandlockPlan as LandlockPlan
    from ._landlock_plan import LandlockStatus as LandlockStatus
    from ._merge import RuleConflict as RuleConflict
    from ._policy import ALWAYS_DENIED as ALWAYS_DENIED
    from ._policy import Policy as Policy
    from ._rules import SELF_PID as SELF_PID
    from ._rules import Action as Action
    from ._rules import Arg as Arg
    from ._rules import Rule as Rule
    from ._ruleset import RuleKind as RuleKind
    from ._ruleset import RuleSet as RuleSet

_EXPORTS = {
    "SystemIO": "._builtins_io",
    "Networking": "._builtins_net",
    "Pipes": "._builtins_proc",
    "Processes": "._builtins_proc",
    "PythonRuntime": "._builtins_proc",
    "Signals": "._builtins_proc",
    "Threads": "._builtins_proc",
    "Time": "._builtins_proc",
    "CompiledPolicy": "._compiled",
    "Status": "._compiled",
    "PolicyError": "._errors",
    "SandboxError": "._errors",
    "Landlock": "._landlock",
    "AccessFs": "._landlock_abi",
    "AccessNet": "._landlock_abi",
    "Scope": "._landlock_abi",
    "Compat": "._landlock_plan",
    "Enforcement": "._landlock_plan",
    "LandlockPlan": "._landlock_plan",
    "LandlockStatus": "._landlock_plan",
    "RuleConflict": "._merge",
    "profiles": ".profiles",
    "ALWAYS_DENIED": "._policy",
    "Policy": "._policy",
    "SELF_PID": "._rules",
    "Action": "._rules",
    "Arg": "._rules",
    "Rule": "._rules",
    "RuleKind": "._ruleset",
    "RuleSet": "._ruleset",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "ALWAYS_DENIED",
    "SELF_PID",
    "AccessFs",
    "AccessNet",
    "Action",
    "Arg",
    "Compat",
    "CompiledPolicy",
    "Enforcement",
    "Landlock",
    "LandlockPlan",
    "LandlockStatus",
    "Networking",
    "Pipes",
    "Policy",
    "PolicyError",
    "Processes",
    "PythonRuntime",
    "Rule",
    "RuleConflict",
    "RuleKind",
    "RuleSet",
    "SandboxError",
    "Scope",
    "Signals",
    "Status",
    "SystemIO",
    "Threads",
    "Time",
    "profiles",
]
