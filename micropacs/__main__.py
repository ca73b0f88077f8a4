"""``python -m micropacs``: the same as the ``micropacs`` command."""

from micropacs.cli import main

main()
