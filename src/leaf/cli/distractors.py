"""``leaf distractors``: write the distractor benchmark (clean / distracted / counterfactual splits per family)."""

from leaf.cli import Command

COMMAND = Command(
    "distractors",
    "write a seeded distractor benchmark: problem families with irrelevant sentences whose spans are known",
    config="leaf.data.config:DistractorsConfig",
    run="leaf.data.distractors:distractors",
)
