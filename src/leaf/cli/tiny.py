"""``leaf tiny``: write a tiny random teacher/student pair to disk (no downloads).

For smoke runs and first contact: the models are random, so what they detect is
noise, but every stage runs on them through the real ``from_pretrained`` path.
"""

from leaf.cli import Command

COMMAND = Command(
    "tiny",
    "write a tiny random teacher and student (shared tokenizer trained locally) for smoke runs",
    config="leaf.tiny:TinyConfig",
    run="leaf.tiny:write_tiny",
)
