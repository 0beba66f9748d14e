"""Shared test configuration: Hypothesis profiles.

``ci`` (the default) is sized so the whole suite runs in a few minutes on a
2-core machine; ``deep`` (``HYPOTHESIS_PROFILE=deep``) runs 10x the examples
for long runs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
