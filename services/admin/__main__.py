"""``python -m services.admin``: the admin service alone, configured by MICROPACS_ vars."""

from micropacs.bootstrap import serve_alone
from services.admin.descriptor import SERVICE

serve_alone(SERVICE)
