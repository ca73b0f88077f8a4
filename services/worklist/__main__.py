"""``python -m services.worklist``: the worklist service alone, configured by MICROPACS_ vars."""

from micropacs.bootstrap import serve_alone
from services.worklist.descriptor import SERVICE

serve_alone(SERVICE)
