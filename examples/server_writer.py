"""The privilege-separated server + writer (what ``isolates demo`` runs).

The code lives in the installed package so that ``isolates demo`` works anywhere; read
it in ``isolates/orchestrator/demo.py`` (orchestrator/demo.py in this repository): a
network-facing HTTP server that cannot touch the disk, a writer that cannot open a
socket, a typed channel between them, and a supervisor that confines itself before
releasing either.

    python examples/server_writer.py [--port PORT] [--directory DIR]
"""

from __future__ import annotations

import sys

from isolates.orchestrator.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
