"""Built-in profiles: OpenBSD pledge promises and systemd syscall groups.

``profiles.systemd("@system-service")`` and ``profiles.pledge("stdio rpath")`` return a
:class:`~isolates.sandbox.Policy`; extend it with more RuleSets like any other policy.
"""

from ._systemd import Group as Group
from ._systemd import groups as groups
from ._systemd import systemd as systemd

__all__ = ["Group", "groups", "systemd"]
