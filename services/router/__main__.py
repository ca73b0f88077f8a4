"""``python -m services.router``: the router alone, configured by MICROPACS_ variables."""

from micropacs.bootstrap import serve_alone
from services.router.descriptor import SERVICE

serve_alone(SERVICE)
