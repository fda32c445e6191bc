"""Built-in profiles: OpenBSD pledge promises and systemd syscall groups (in progress)."""
