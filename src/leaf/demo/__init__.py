"""The demo benchmark: synthetic tasks with confounders known by construction, and tiny models.

* :mod:`leaf.demo.tasks` -- the task generator (three families, a bias knob,
  ground-truth ``meta.confounder_spans``);
* :mod:`leaf.demo.models` -- a tokenizer, a teacher and a student trained
  locally on those tasks and cached on disk;
* :mod:`leaf.demo.greedy` -- greedy decoding and answer matching used to
  measure them.
"""
