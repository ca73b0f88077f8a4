"""Property-based fuzzing of the parsers micropacs relies on (ARCHITECTURE.md, "Security").

Each target feeds random and mutated inputs to one parser and checks that it
either returns a sane result or raises the error it documents, in bounded
time and memory. A short run is part of every ``pytest``; ``make fuzz`` runs
the same targets long (``MICROPACS_FUZZ_EXAMPLES``) and prints how many
inputs each target ran.
"""
