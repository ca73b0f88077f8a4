"""``python -m services.qr``: the qr service alone, configured by MICROPACS_ variables."""

from micropacs.bootstrap import serve_alone
from services.qr.descriptor import SERVICE

serve_alone(SERVICE)
