"""Run one fuzz target under atheris: `python -m fuzz.run TARGET [libFuzzer flags] [corpus dirs]`.

The gated modules a target reaches are instrumented for coverage (the
fuzzer's guide); the exit status is libFuzzer's (0: no crash). A crash prints
the exception and writes the input to `-artifact_prefix`.
"""

import sys

import atheris

with atheris.instrument_imports(include=["gated"]):
    from fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]", file=sys.stderr)
        sys.exit(2)
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
