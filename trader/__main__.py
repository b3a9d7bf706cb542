"""`python -m trader`: the same entry point as the `trader` console script."""

from trader.cli import main

# Guarded: the database writer's child process re-imports the main module.
if __name__ == "__main__":
    main()
