"""The one error every reader of input data raises (its own module so readers and writers share it)."""

from __future__ import annotations


class DataError(ValueError):
    """Input data is malformed; the message names file, line and field of each problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        if len(problems) == 1:  # the usual case: one line naming file, line and field
            super().__init__(problems[0])
        else:
            super().__init__(f"{len(problems)} problems in input data:\n  " + "\n  ".join(shown) + more)
