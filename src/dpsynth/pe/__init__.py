"""Private Evolution (Aug-PE): a DP synthetic-text generator that only runs inference (``generator: pe``)."""
