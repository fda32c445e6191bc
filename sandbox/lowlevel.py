"""The sandbox's low-level seam: what isolates.channels and isolates.orchestrator (and
anyone building their own supervisor) use below Policy and RuleSet.

In the spirit of ``trio.lowlevel``: these are stable names for the raw pieces, without
the guard rails of the high-level API. Nothing in the other packages imports a private
``isolates.sandbox._*`` module; everything they take comes through here (a test checks).

- ``lower_rlimits`` (prlimit64 on this process, only ever lowering);
- loading: ``confine`` (a compiled policy from plain data, the Landlock plan fitted by
  ``resolve_landlock``: what an isolate runs; ``rehearse_confinement`` pays its
  first-time costs ahead), ``enforce_landlock`` (a fitted plan alone),
  ``landlock_enforcement`` (what it will report), ``landlock_abi`` (this kernel's),
  ``program_for_pid`` (a program's SELF_PID rules made for another process),
  ``load_seccomp``, ``preload_runtime``,
  ``set_no_new_privs``,
  ``set_parent_death_signal``, ``set_not_dumpable``, ``syscall`` (a raw syscall by
  name);
- seccomp user notification: ``Notification``, ``receive_notification``,
  ``deny_notification``, ``continue_notification``, ``notification_valid``,
  ``wake_synchronously``;
- a call in words: ``describe_call`` (flags by name, paths read through
  ``memory_reader``);
- the tracer's child: ``notify_program``, ``exec_traced``, ``set_child_subreaper``;
- Landlock: ``LandlockPlan``, ``LandlockStatus``, ``apply_plan``;
- syscalls by name and number: ``syscall_number``, ``syscall_name``; the BPF evaluator:
  ``evaluate``, ``decide`` (of a compiled program), ``action_of``, ``NATIVE_ARCH``; the reference
  decider, from a policy's rules: ``decide_policy``, ``decide_rules``; a policy's merged
  lines: ``Entry``, ``Cmp``; the compiler itself: ``compile_filter`` (entries, guards and
  a default to BPF: ``isolates run``'s guards-only program);
- the paths a process maps and imports from: ``mapped_files``, ``package_dirs``;
- ``ns``: the namespace calls (unshare, mount, pivot_root, id maps, capabilities);
- ``uapi``: Linux's constants (clone flags, AT_*, SECCOMP_*, ioctl commands...);
- capabilities by name: ``capability_numbers`` (PolicyError for an unknown one),
  ``capability_names``;
- ``did_you_mean``, the one suggestion helper; ``lazy_exports`` for package ``__init__``.
"""

from __future__ import annotations

from ._lazy import lazy_exports as _lazy_exports

TYPE_CHECKING = False  # not typing's: an isolate imports this package before it is confined
if TYPE_CHECKING:
    from . import _kernel_ns as ns
    from . import _uapi as uapi
    from ._bpf import NATIVE_ARCH as NATIVE_ARCH
    from ._bpf import action_of as action_of
    from ._bpf import decide as decide
    from ._bpf import evaluate as evaluate
    from ._bpf import evaluate_reading as evaluate_reading
    from ._capabilities import capability_names as capability_names
    from ._capabilities import capability_numbers as capability_numbers
    from ._compiler import compile_filter as compile_filter
    from ._confine import confine as confine
    from ._confine import enforce_landlock as enforce_landlock
    from ._confine import landlock_enforcement as landlock_enforcement
    from ._confine import preload_runtime as preload_runtime
    from ._confine import program_for_pid as program_for_pid
    from ._confine import rehearse as rehearse_confinement
    from ._decide import decide as decide_policy
    from ._decide import decide_rules as decide_rules
    from ._decide import deciding as deciding
    from ._describe import SIGNATURE_KINDS as SIGNATURE_KINDS
    from ._describe import describe as describe_call
    from ._describe import memory_reader as memory_reader
    from ._describe import named_values as named_values
    from ._describe import spell_argument as spell_argument
    from ._guard import Guard as Guard
    from ._kernel import Notification as Notification
    from ._kernel import continue_notification as continue_notification
    from ._kernel import deny_notification as deny_notification
    from ._kernel import load_seccomp as load_seccomp
    from ._kernel import lower_rlimits as lower_rlimits
    from ._kernel import notification_valid as notification_valid
    from ._kernel import receive_notification as receive_notification
    from ._kernel import set_no_new_privs as set_no_new_privs
    from ._kernel import set_not_dumpable as set_not_dumpable
    from ._kernel import set_parent_death_signal as set_parent_death_signal
    from ._kernel import syscall as syscall
    from ._kernel import wake_synchronously as wake_synchronously
    from ._kernel_trace import exec_traced as exec_traced
    from ._kernel_trace import notify_program as notify_program
    from ._kernel_trace import set_child_subreaper as set_child_subreaper
    from ._landlock_paths import mapped_files as mapped_files
    from ._landlock_paths import package_dirs as package_dirs
    from ._landlock_plan import LandlockPlan as LandlockPlan
    from ._landlock_plan import LandlockStatus as LandlockStatus
    from ._landlock_plan import apply_plan as apply_plan
    from ._landlock_plan import resolve_here as resolve_landlock
    from ._landlock_sys import kernel_abi as landlock_abi
    from ._lazy import lazy_exports as lazy_exports
    from ._merge import Entry as Entry
    from ._rules import Cmp as Cmp
    from ._suggest import did_you_mean as did_you_mean
    from ._syscalls import name_of as syscall_name
    from ._syscalls import number as syscall_number

# Lazy (PEP 562), so an isolate that takes one name loads one module.
_EXPORTS = {
    "NATIVE_ARCH": "._bpf", "action_of": "._bpf", "decide": "._bpf", "evaluate": "._bpf",
    "evaluate_reading": "._bpf",
    "preload_runtime": "._confine", "confine": "._confine", "lower_rlimits": "._kernel",
    "enforce_landlock": "._confine", "program_for_pid": "._confine",
    "landlock_enforcement": "._confine",
    "landlock_abi": "._landlock_sys:kernel_abi",
    "capability_names": "._capabilities", "capability_numbers": "._capabilities",
    "rehearse_confinement": "._confine:rehearse",
    "resolve_landlock": "._landlock_plan:resolve_here", "did_you_mean": "._suggest",
    "decide_policy": "._decide:decide", "decide_rules": "._decide", "deciding": "._decide",
    "Notification": "._kernel", "continue_notification": "._kernel",
    "notification_valid": "._kernel", "describe_call": "._describe:describe",
    "memory_reader": "._describe", "SIGNATURE_KINDS": "._describe",
    "named_values": "._describe",
    "spell_argument": "._describe",
    "deny_notification": "._kernel", "load_seccomp": "._kernel",
    "receive_notification": "._kernel", "set_no_new_privs": "._kernel",
    "set_parent_death_signal": "._kernel", "syscall": "._kernel",
    "set_not_dumpable": "._kernel",
    "wake_synchronously": "._kernel", "compile_filter": "._compiler",
    "exec_traced": "._kernel_trace", "notify_program": "._kernel_trace",
    "set_child_subreaper": "._kernel_trace",
    "mapped_files": "._landlock_paths", "package_dirs": "._landlock_paths",
    "LandlockPlan": "._landlock_plan", "LandlockStatus": "._landlock_plan",
    "apply_plan": "._landlock_plan", "lazy_exports": "._lazy", "Entry": "._merge",
    "Guard": "._guard",
    "Cmp": "._rules", "syscall_name": "._syscalls:name_of",
    "syscall_number": "._syscalls:number", "ns": "._kernel_ns:", "uapi": "._uapi:",
}  # fmt: skip
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "NATIVE_ARCH",
    "SIGNATURE_KINDS",
    "Cmp",
    "Entry",
    "Guard",
    "LandlockPlan",
    "LandlockStatus",
    "Notification",
    "action_of",
    "apply_plan",
    "capability_names",
    "capability_numbers",
    "compile_filter",
    "confine",
    "continue_notification",
    "decide",
    "decide_policy",
    "decide_rules",
    "deciding",
    "deny_notification",
    "describe_call",
    "did_you_mean",
    "enforce_landlock",
    "evaluate",
    "evaluate_reading",
    "exec_traced",
    "landlock_abi",
    "landlock_enforcement",
    "lazy_exports",
    "load_seccomp",
    "lower_rlimits",
    "mapped_files",
    "memory_reader",
    "named_values",
    "notification_valid",
    "notify_program",
    "ns",
    "package_dirs",
    "preload_runtime",
    "program_for_pid",
    "receive_notification",
    "rehearse_confinement",
    "resolve_landlock",
    "set_child_subreaper",
    "set_no_new_privs",
    "set_not_dumpable",
    "set_parent_death_signal",
    "spell_argument",
    "syscall",
    "syscall_name",
    "syscall_number",
    "uapi",
    "wake_synchronously",
]  # fmt: skip
