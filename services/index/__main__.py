"""``python -m services.index``: the index service alone, configured by MICROPACS_ variables."""

from micropacs.bootstrap import serve_alone
from services.index.descriptor import SERVICE

serve_alone(SERVICE)
