"""Coverage-guided fuzzing (atheris) of everything that takes bytes from outside.

`fuzz/targets.py` holds one target per input surface, each stating the
exceptions the product documents for bad input (anything else is a crash)
and, where cheap, a round-trip or consistency property. `fuzz/corpus/<target>/`
holds the seeds kept in the repo (valid inputs, written by `fuzz/seed.py`).
Run one: `python -m fuzz.run TARGET [libFuzzer flags] [corpus dirs]`.
"""
