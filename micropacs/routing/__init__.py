"""Routing: which stored instances go where (docs/routing.md).

:mod:`micropacs.routing.rules` reads the rules file and matches an ``instance.stored``
event against it with the C-FIND matching (PS3.4 C.2.2.2) of
:mod:`micropacs.dicom.matching`; the router service queues and sends what it decides.
"""
