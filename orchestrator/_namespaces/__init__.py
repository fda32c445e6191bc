"""Namespaces for an isolate: the options (``options``), entering them (``enter``), the
pid namespace's pid 1 and its mirror (``pid``), the mount namespace's new root
(``mount``), and reading an executable's interpreter (``elf``, which the new root and
``isolates run`` both need).

The lowest layer of the orchestrator: it imports only isolates.sandbox. Importing the
package imports nothing else, so an isolate that declares no namespaces pays only for
``options`` (its boot message names the type).
"""
