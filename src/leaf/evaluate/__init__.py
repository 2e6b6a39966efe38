"""Generation, answer checking and benchmark evaluation (``leaf evaluate``, ``leaf label``)."""
