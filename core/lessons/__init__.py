"""The lessons floor: what the course teaches, as data and sentences (presets, families, verdicts, the noise margin, outcome sentences)."""
