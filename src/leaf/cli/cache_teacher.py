"""``leaf cache-teacher``: store the teacher's top-k log-probs of every response token, once.

``leaf distill --teacher-cache DIR`` then trains without loading the teacher.
Resumable: rerun the same command after a crash.
"""

from leaf.cli import Command

COMMAND = Command(
    "cache-teacher",
    "cache the teacher's top-k log-probs of every loss token (train later with leaf distill --teacher-cache)",
    config="leaf.distill.config:CacheConfig",
    run="leaf.distill:build_cache",
)
