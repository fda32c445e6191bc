"""The ``isolates`` command line: ``run``, ``trace`` and ``demo``.

``main`` parses the command line and hands over to a subcommand: ``run`` (with
``run_startup``, what a program needs to start), ``trace`` (with ``traced``, what a
trace records, and ``trace_cover``, the profiles covering it); ``command`` resolves the
program both run. Nothing imports this package but the console script
(``isolates = isolates.orchestrator._cli.main:main``) and ``python -m
isolates.orchestrator._cli``.

Adding a subcommand: a module here with ``register(subparsers)`` (its parser, and
``set_defaults(command=...)`` naming a function of ``argparse.Namespace`` returning the
exit status), listed in ``main._subcommands``.
"""
