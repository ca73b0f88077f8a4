"""``python -m services.ingest``: the ingest service alone, configured by MICROPACS_ variables."""

from micropacs.bootstrap import serve_alone
from services.ingest.descriptor import SERVICE

serve_alone(SERVICE)
