"""The test suite uses the harness isolates ships (isolates.orchestrator.testing)."""

from isolates.orchestrator.testing import Outcome as Outcome
from isolates.orchestrator.testing import in_child as in_child
