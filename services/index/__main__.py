"""``python -m services.index``: the index service alone, configured by MICROPACS_ variables."""

from micropacs.cli import main

main(["run", "index"])
