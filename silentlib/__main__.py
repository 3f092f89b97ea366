"""Command line: ``python -m silentlib bench|figures [options]``.

* ``bench [--sizes 100,200,400] [--device cpu|cuda] [--dtype float32|float64]`` (:mod:`silentlib.bench`);
* ``figures --out DIR [--scale fast|paper] [--device cpu|cuda] [--chapters 02,05]`` (:mod:`silentlib.figures`).
"""
import sys

USAGE = """usage: python -m silentlib <command> [options]

commands:
  bench    time the exact NTK methods (layerwise, jacobian, vp) against P;
           python -m silentlib bench --help for its options
  figures  execute every chapter at one scale, checking its assertions, and write
           its figures (PNG), executed notebooks and a summary of times;
           python -m silentlib figures --help for its options
"""


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m silentlib <command> [options]``; ``argv`` defaults to ``sys.argv[1:]``.

    Returns the exit status: the command's (``figures``: 0 when every chapter passed, 1
    otherwise, 2 without the book), 0 after ``--help``, 2 for no or an unknown command.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from .bench import main as bench_main
        bench_main(rest)
        return 0
    if command == "figures":
        from .figures import main as figures_main
        return figures_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
