"""``python -m isolates.orchestrator._cli``: the ``isolates`` command."""

import sys

from .main import main

sys.exit(main())
