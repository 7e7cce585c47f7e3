"""`python -m synthct …` (also the entry point for `torchrun -m synthct train …` and background jobs)."""

from synthct.cli import main

if __name__ == "__main__":
    main()
