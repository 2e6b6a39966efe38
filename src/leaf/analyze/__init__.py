"""Attention analysis: how much response tokens attend to flagged (confounder) spans."""
