"""``leaf data``: data utilities; ``leaf data convert`` maps a corpus onto leaf's sample JSONL."""

from leaf.cli import Command

COMMAND = Command(
    "data",
    "data utilities: convert a corpus (NuminaMath-CoT, AceCode-87K, HotpotQA, any with --field) to sample JSONL",
    children=(
        Command(
            "convert",
            "map a dataset onto the sample JSONL format",
            config="leaf.data.config:ConvertConfig",
            run="leaf.data.convert:convert",
        ),
    ),
)
