"""`python -m trader`: the same entry point as the `trader` console script."""

from trader.cli import main

# Guarded: `trader evaluate`'s spawned worker processes re-import the main module.
if __name__ == "__main__":
    main()
