"""Built-in profiles: OpenBSD pledge promises and systemd syscall groups.

``profiles.pledge("stdio rpath inet dns")`` and ``profiles.systemd("@system-service")``
return a :class:`~isolates.sandbox.Policy`; extend it with more RuleSets like any other.
docs/profiles.md maps every promise and group to its syscalls.
"""

from ._pledge import NO_LINUX_MEANING as NO_LINUX_MEANING
from ._pledge import PROMISES as PROMISES
from ._pledge import pledge as pledge
from ._systemd import Group as Group
from ._systemd import groups as groups
from ._systemd import systemd as systemd

__all__ = ["NO_LINUX_MEANING", "PROMISES", "Group", "groups", "pledge", "systemd"]
