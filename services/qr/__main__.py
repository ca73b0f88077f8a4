"""``python -m services.qr``: the qr service alone, configured by MICROPACS_ variables."""

from micropacs.cli import main

main(["run", "qr"])
