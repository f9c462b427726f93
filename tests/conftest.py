import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

PRIVILEGED = os.environ.get("ENGINE_PRIVILEGED_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    """Privileged tests need root and ENGINE_PRIVILEGED_TESTS=1 (CI sets both). They are
    skipped elsewhere with a reason; CI fails if any is skipped (see .ci/run)."""
    if PRIVILEGED and os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI must run the privileged tests: run as root with "
                                "ENGINE_PRIVILEGED_TESTS=1 (make test does this for root)")
    why = ("needs root" if PRIVILEGED else "set ENGINE_PRIVILEGED_TESTS=1 (and run as root)")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"privileged test: {why}"))
