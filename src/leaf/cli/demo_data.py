"""``leaf demo-data``: the demo's tiny models and one seed's pool and test sets, for a recipe or the stages."""

from leaf.cli import Command

COMMAND = Command(
    "demo-data",
    "write the demo's tokenizer/teacher/student and one seed's pool and test sets (JSONL) into a folder",
    config="leaf.demo.export.config:DemoDataConfig",
    run="leaf.demo.export:demo_data",
)
