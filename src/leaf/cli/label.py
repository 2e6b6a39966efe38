"""``leaf label``: fill teacher_correct / student_correct (and the generations) for each sample."""

from leaf.cli import Command

COMMAND = Command(
    "label",
    "generate with teacher and student, check the answers, and write teacher_correct/student_correct",
    config="leaf.evaluate.config:LabelConfig",
    run="leaf.evaluate:label",
)
