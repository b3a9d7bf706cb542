"""`python -m trader`: the same entry point as the `trader` console script."""

from trader.cli import main

main()
