"""A bare pynetdicom Storage SCP with the same durable write as ``bench.asyncio_receiver``,
as a baseline of ``bench.receive_path``: chunked receive to a file, fsync, rename.

    python -m bench.pynetdicom_receiver PORT FOLDER [--wakeups]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import cast

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_STORE

from micropacs.dimse import wakeups
from micropacs.dimse.sockets import NODELAY
from micropacs.dimse.verification import VERIFICATION
from services.ingest.dimse import preferred_syntaxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--wakeups", action="store_true", help="micropacs.dimse.wakeups on")
    args = parser.parse_args()
    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    if args.wakeups:
        wakeups.install()
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(folder)  # received files land beside their final place

    def durable(event: evt.Event) -> int:
        path = Path(event.dataset_path)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        request = cast(C_STORE, event.request)
        path.replace(folder / f"{request.AffectedSOPInstanceUID}.dcm")
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return 0x0000

    ae = AE()
    ae.maximum_pdu_size = 1 << 20
    syntaxes = preferred_syntaxes()
    ae.add_supported_context(VERIFICATION, syntaxes)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), syntaxes)
    ae.start_server(("127.0.0.1", args.port), evt_handlers=[NODELAY, (evt.EVT_C_STORE, durable)])


if __name__ == "__main__":
    main()
