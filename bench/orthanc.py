"""Debian's Orthanc with its DICOMweb plug-in, as the peer of the DICOMweb benchmark.

Installed with apt-get when missing (packages ``orthanc`` and
``orthanc-dicomweb``) and run on free loopback ports in a folder of its own.
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


def install() -> None:
    """apt-get install Orthanc and its DICOMweb plug-in if they are not there."""
    if Path(ORTHANC).exists() and (PLUGINS / "libOrthancDicomWeb.so").exists():
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
    """One Orthanc process: ``dicom_port`` (AE ORTHANC) and ``http`` with /dicom-web."""

    def __init__(self, folder: Path) -> None:
        install()
        folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        config = {
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
        (folder / "orthanc.json").write_text(json.dumps(config))
        log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log
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
