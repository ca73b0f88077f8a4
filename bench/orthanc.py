"""Debian's Orthanc with its DICOMweb plug-in, as the peer of the DICOMweb benchmark,
and with its worklist plug-in over a folder of .wl files, as the peer of the
worklist benchmark.

Installed with apt-get when missing (packages ``orthanc``, which ships the
worklist plug-in, and ``orthanc-dicomweb``) and run on free loopback ports in
a folder of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.common import free_port, wait_port

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")
NEEDED_PLUGINS = ("libOrthancDicomWeb.so", "libModalityWorklists.so")
WORKLIST_SCU = "BENCH"
"""The calling AE title Orthanc's worklist plug-in answers."""


def install() -> None:
    """apt-get install Orthanc and its DICOMweb and worklist plug-ins if they are not there."""
    if Path(ORTHANC).exists() and all((PLUGINS / name).exists() for name in NEEDED_PLUGINS):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [
            *sudo,
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "orthanc",
            "orthanc-dicomweb",
        ],
        check=True,
        env=env,
    )


class Orthanc:
    """One Orthanc process: ``dicom_port`` (AE ORTHANC) and ``http`` with /dicom-web.

    With ``worklists``, its worklist plug-in answers Modality Worklist C-FIND
    from the .wl files of that folder. ``modalities`` are added to its
    "DicomModalities" (name: AE title, host, port): C-MOVE destinations, and
    callers that Orthanc 1.10 lets retrieve (C-GET, C-MOVE) only when known.
    ``env`` is its environment (default: ours), e.g. ``TCP_NODELAY=1``, which the
    DCMTK it is built on needs to send C-STOREs without waiting for delayed ACKs.
    """

    def __init__(
        self,
        folder: Path,
        worklists: Path | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        install()
        folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        config: dict[str, object] = {
            "Name": "bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        }
        known: dict[str, list[str | int]] = {}
        if worklists is not None:
            config["Plugins"] = [str(PLUGINS / name) for name in NEEDED_PLUGINS]
            config["Worklists"] = {"Enable": True, "Database": str(worklists)}
            # Orthanc 1.10 answers a worklist query only from a known modality.
            known["bench"] = [WORKLIST_SCU, "127.0.0.1", 104]
        known.update({name: list(entry) for name, entry in (modalities or {}).items()})
        if known:
            config["DicomModalities"] = known
        (folder / "orthanc.json").write_text(json.dumps(config))
        log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log, env=env
        )
        wait_port(self.http_port)
        wait_port(self.dicom_port)
        self.folder = folder

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
