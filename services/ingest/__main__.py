"""``python -m services.ingest``: the ingest service alone, configured by MICROPACS_ variables."""

from micropacs.cli import main

main(["run", "ingest"])
