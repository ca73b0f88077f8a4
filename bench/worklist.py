"""The worklist measured: MWL C-FIND beside Orthanc's worklist plug-in, and HL7 orders per second.

- HL7 ORM throughput: ``micropacs serve`` (default settings: fsync on)
  receives ORM^O01 NW orders over one MLLP connection from python-hl7's
  client, each sent once the previous one's ACK is back; every ACK is an AA,
  given only once the order's events are durable on the bus. The server's
  CPU seconds (utime + stime of the process, every thread) per message,
  up to the last ACK and until the index has applied every order.
- MWL C-FIND latency (median, p95) with ``findscu -W`` (a new association
  per query, as a modality does) against a ``micropacs serve`` holding
  10,000 scheduled steps (20 station AE titles, 60 days), scheduled through
  the real path: OMI^O23 orders over MLLP (the IPC segment carries the
  Scheduled Station AE Title, which an ORM^O01 cannot), then waiting until
  the index has applied them. The same items, read back from micropacs'
  worklist store, are written as .wl files for Debian's Orthanc and its
  worklist plug-in, which answers the same findscu queries in the same run.

    python -m bench.worklist [--items 10000] [--orders 2000] [--queries 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hl7.mllp import open_hl7_connection
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from tqdm import tqdm

from bench.common import (
    DCMTK_ENV,
    cpu_seconds,
    free_port,
    save,
    start_serve,
    stop,
    summary_ms,
    wait_port,
)
from bench.orthanc import ORTHANC, WORKLIST_SCU, Orthanc
from micropacs.adapters.factory import open_worklist
from micropacs.dicom.json_model import from_json
from tests.unit.hl7_samples import segment

MWL_FIND = "1.2.840.10008.5.1.4.31"  # PS3.4 K.6.1.1
HOST = "127.0.0.1"
FIRST_DAY = date(2026, 3, 2)
DAYS = 60
PATIENTS = 6_000
STATIONS = [
    *(f"CT{n:02d}" for n in range(1, 6)),
    *(f"MR{n:02d}" for n in range(1, 5)),
    *(f"CR{n:02d}" for n in range(1, 4)),
    *(f"US{n:02d}" for n in range(1, 4)),
    "MG01",
    "MG02",
    "NM01",
    "PT01",
    "XA01",
]
SURNAMES_TEXT = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
    "Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell "
    "Mitchell Carter Roberts Smithson Smyth Schmidt Schneider Fischer Weber Meyer Wagner "
    "Becker Hoffmann Müller Schäfer Novák Svoboda Dvořák Černý Procházka Kučera Veselý "
    "Horák Němec Marek Pokorný Dupont Durand Lefèvre Moreau Laurent Rossi Russo Ferrari "
    "Esposito Bianchi Kowalski Nowak Wiśniewski Jensen Nielsen Hansen Andersson Johansson "
    "Larsson Olsen "
)
SURNAMES = SURNAMES_TEXT.split()
GIVEN_TEXT = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David "
    "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Anna Jan Petr Jiří "
    "Eva Marie Lukáš Tereza Hans Jürgen Ursula Pierre Hélène Marco Giulia Piotr Zofia Lars "
    "Ingrid "
)
GIVEN = GIVEN_TEXT.split()
PROCEDURES = {
    "CT": ("CT-HEAD^CT head^LOCAL", "CT-CHEST^CT chest^LOCAL", "CT-ABD^CT abdomen^LOCAL"),
    "MR": ("MR-KNEE^MR knee^LOCAL", "MR-BRAIN^MR brain^LOCAL", "MR-SPINE^MR spine^LOCAL"),
    "CR": ("CR-CHEST^Chest X-ray^LOCAL", "CR-HAND^Hand X-ray^LOCAL"),
    "US": ("US-ABD^US abdomen^LOCAL", "US-THY^US thyroid^LOCAL"),
    "MG": ("MG-SCR^Screening mammography^LOCAL",),
    "NM": ("NM-BONE^Bone scan^LOCAL",),
    "PT": ("PT-WB^PET whole body^LOCAL",),
    "XA": ("XA-COR^Coronary angiography^LOCAL",),
}
STEP = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = {
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "AccessionNumber": "",
    "RequestedProcedureID": "",
    "StudyInstanceUID": "",
    f"{STEP}.ScheduledStationAETitle": "",
    f"{STEP}.ScheduledProcedureStepStartDate": "",
    f"{STEP}.ScheduledProcedureStepStartTime": "",
    f"{STEP}.Modality": "",
    f"{STEP}.ScheduledProcedureStepID": "",
}


@dataclass(frozen=True)
class Order:
    """One scheduled procedure step as a RIS orders it."""

    number: int
    patient_id: str
    family: str
    given: str
    birth_date: str
    sex: str
    station: str
    day: str
    time: str

    @property
    def modality(self) -> str:
        return self.station[:2]


def orders(count: int, seed: int = 11) -> list[Order]:
    """``count`` steps over ``PATIENTS`` patients, 20 stations and 60 days, always the same."""
    rng = random.Random(seed)
    out = []
    for number in range(count):
        patient = rng.randrange(PATIENTS)
        person = random.Random(patient)  # a patient keeps their name
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        slot = rng.randrange(48)  # 07:00 to 18:45 in quarter hours
        out.append(
            Order(
                number=number,
                patient_id=f"PAT{patient:06d}",
                family=person.choice(SURNAMES),
                given=person.choice(GIVEN),
                birth_date=f"{person.randrange(1930, 2024)}{person.randrange(1, 13):02d}"
                f"{person.randrange(1, 29):02d}",
                sex=person.choice("MF"),
                station=rng.choice(STATIONS),
                day=day.strftime("%Y%m%d"),
                time=f"{7 + slot // 4:02d}{slot % 4 * 15:02d}00",
            )
        )
    return out


def msh(kind: str, control: str, version: str) -> str:
    return (
        f"MSH|^~\\&|RIS|HOSP|MICROPACS|RAD|20260301070000||{kind}|{control}|P|{version}"
        "||||||UNICODE UTF-8"
    )


def pid(order: Order) -> str:
    return (
        f"PID|1||{order.patient_id}^^^HOSP||{order.family}^{order.given}||"
        f"{order.birth_date}|{order.sex}"
    )


def procedure(order: Order) -> str:
    choices = PROCEDURES[order.modality]
    return choices[order.number % len(choices)]


def omi(order: Order) -> str:
    """An OMI^O23 of IHE RAD-4 (HL7 v2.5.1): one IPC step with its station AE title."""
    n = order.number
    return (
        "\r".join(
            [
                msh("OMI^O23^OMI_O23", f"OMI{n}", "2.5.1"),
                pid(order),
                "PV1|1|O|RAD^101^1",
                f"ORC|NW|PL{n}|FL{n}||SC",
                f"TQ1|1||||||{order.day}{order.time[:4]}||R",
                f"OBR|1|PL{n}|FL{n}|{procedure(order)}",
                f"IPC|ACC{n}|RP{n}||SPS{n}|{order.modality}|{procedure(order)}|"
                f"{order.station} room|RAD 1|{order.station}",
            ]
        )
        + "\r"
    )


def orm(order: Order) -> str:
    """An ORM^O01 NW of IHE RAD-4 (HL7 v2.3.1): OBR-18/19/20, OBR-24, OBR-27.4."""
    n = order.number
    return (
        "\r".join(
            [
                msh("ORM^O01", f"ORM{n}", "2.3.1"),
                pid(order),
                "PV1|1|O|RAD^101^1|||||1234^Welby^Marcus^^^Dr",
                segment("ORC", {1: "NW", 2: f"PL{n}", 3: f"FL{n}", 5: "SC", 12: "5678^House"}),
                segment(
                    "OBR",
                    {
                        1: "1",
                        2: f"PL{n}",
                        3: f"FL{n}",
                        4: procedure(order),
                        18: f"ACC{n}",
                        19: f"RP{n}",
                        20: f"SPS{n}",
                        24: order.modality,
                        27: f"^^^{order.day}{order.time[:4]}^^R",
                    },
                ),
            ]
        )
        + "\r"
    )


async def send_over_one_connection(port: int, messages: Sequence[str], desc: str) -> float:
    """Send each message once the previous one's ACK is back; seconds taken. Every ACK is AA."""
    reader, writer = await open_hl7_connection(HOST, port, encoding="utf-8")
    refused = 0
    started = time.perf_counter()
    try:
        for text in tqdm(messages, unit="msg", desc=desc, mininterval=2):
            writer.writeblock(text.encode())
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 30)
            refused += str(ack["MSA.F1"]) != "AA"
    finally:
        seconds = time.perf_counter() - started
        writer.close()
        await writer.wait_closed()
    if refused:
        raise RuntimeError(f"{refused} of {len(messages)} messages not acknowledged AA")
    return seconds


def send(port: int, messages: Sequence[str], desc: str) -> float:
    return asyncio.run(send_over_one_connection(port, messages, desc))


def items_applied(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
        try:
            return int(db.execute("SELECT count(*) FROM items").fetchone()[0])
        except sqlite3.OperationalError:  # the index has not created the table yet
            return 0


def wait_applied(database: Path, count: int, timeout: float = 900) -> float:
    """Seconds until the index has written ``count`` items into the worklist store."""
    started = time.perf_counter()
    while items_applied(database) < count:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"the index applied {items_applied(database)} of {count} items")
        time.sleep(0.2)
    return time.perf_counter() - started


def serve_with_hl7(data: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """``micropacs serve`` with its HL7 listener on a free port: process, DICOM and HL7 ports."""
    data.mkdir(parents=True)
    dicom_port, hl7_port = free_port(), free_port()
    server = start_serve(
        data, dicom_port, free_port(), env={"MICROPACS_WORKLIST__HL7_PORT": str(hl7_port)}
    )
    wait_port(hl7_port)
    return server, dicom_port, hl7_port


def hl7_throughput(work: Path, count: int) -> dict[str, Any]:
    data = work / "hl7" / "data"
    server, _, hl7_port = serve_with_hl7(data)
    messages = [orm(order) for order in orders(count, seed=2575)]
    try:
        before = cpu_seconds(server.pid)
        seconds = send(hl7_port, messages, "ORM^O01")
        acked = cpu_seconds(server.pid)
        applied_after = wait_applied(data / "worklist.db", count)
        applied = cpu_seconds(server.pid)
    finally:
        stop(server)
    return {
        "messages": count,
        "seconds": round(seconds, 2),
        "acknowledged_per_s": round(count / seconds, 1),
        "server_cpu_ms_per_message_to_ack": round((acked - before) / count * 1000, 2),
        "server_cpu_ms_per_message_applied": round((applied - before) / count * 1000, 2),
        "index_done_s_after_last_ack": round(applied_after, 2),
    }


def findscu_w(port: int, called: str, keys: dict[str, str]) -> tuple[float, int]:
    """One ``findscu -W`` query on a new association: seconds, number of answers."""
    args = ["findscu", "-v", "-W", "-aet", WORKLIST_SCU, "-aec", called]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value else key]
    args += [HOST, str(port)]
    started = time.perf_counter()
    result = subprocess.run(
        args, env=DCMTK_ENV, capture_output=True, text=True, errors="replace", check=True
    )
    elapsed = time.perf_counter() - started
    if "(Success)" not in result.stderr:
        raise RuntimeError(f"findscu -W did not end in Success: {result.stderr[-500:]}")
    return elapsed, result.stderr.count("(Pending)")


def cases(queries: int) -> dict[str, list[dict[str, str]]]:
    """The identifiers of each kind of query, the same sequence for both servers."""
    days = [(FIRST_DAY + timedelta(days=d)).strftime("%Y%m%d") for d in range(DAYS)]
    by_station = [
        {
            **RETURN_KEYS,
            f"{STEP}.ScheduledStationAETitle": STATIONS[q % len(STATIONS)],
            f"{STEP}.ScheduledProcedureStepStartDate": days[(q * 7) % DAYS],
        }
        for q in range(queries)
    ]
    by_name = [{**RETURN_KEYS, "PatientName": "Smi*"} for _ in range(queries)]
    return {"station_and_day": by_station, "patient_name_prefix_smi": by_name}


def measure_mwl(port: int, called: str, queries: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, identifiers in cases(queries).items():
        samples, answers = [], []
        for keys in identifiers:
            elapsed, found = findscu_w(port, called, keys)
            samples.append(elapsed)
            answers.append(found)
        results[name] = {
            **summary_ms(samples),
            "answers_mean": round(sum(answers) / len(answers), 1),
            "answers_total": sum(answers),
        }
        print(called, name, results[name], flush=True)
    return results


async def export_wl(worklist_db: Path, folder: Path) -> int:
    """Every item of micropacs' worklist store as a .wl file (PS3.10 file, as dump2dcm writes)."""
    worklist = await open_worklist(f"sqlite://{worklist_db}")
    written = 0
    try:
        async for item in worklist.find_items({}):
            ds = from_json(item.dataset)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = UID(MWL_FIND)
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(folder / f"{written:05d}.wl", enforce_file_format=True)
            written += 1
    finally:
        await worklist.close()
    return written


def orthanc_version() -> str:
    found = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, check=True)
    return found.stdout.splitlines()[0]


def mwl_latency(work: Path, count: int, queries: int) -> dict[str, Any]:
    data = work / "mwl" / "data"
    server, dicom_port, hl7_port = serve_with_hl7(data)
    try:
        seconds = send(hl7_port, [omi(order) for order in orders(count)], "OMI^O23")
        index_lag = wait_applied(data / "worklist.db", count)
        ours = measure_mwl(dicom_port, "MICROPACS", queries)
    finally:
        stop(server)
    folder = work / "orthanc-worklists"
    folder.mkdir()
    written = asyncio.run(export_wl(data / "worklist.db", folder))
    orthanc = Orthanc(work / "orthanc", worklists=folder, env=DCMTK_ENV)  # TCP_NODELAY
    try:
        theirs = measure_mwl(orthanc.dicom_port, "ORTHANC", queries)
    finally:
        orthanc.stop()
    return {
        "items": count,
        "scheduled_by": "OMI^O23 over MLLP, one connection, each message after the last ACK",
        "scheduling_acknowledged_per_s": round(count / seconds, 1),
        "index_done_s_after_last_ack": round(index_lag, 2),
        "orthanc_wl_files": written,
        "orthanc_version": orthanc_version(),
        "same_answers": all(
            ours[name]["answers_total"] == theirs[name]["answers_total"] for name in ours
        ),
        "micropacs": ours,
        "orthanc": theirs,
        "ratios (micropacs / orthanc)": {
            name: {
                stat: round(ours[name][stat] / theirs[name][stat], 3)
                for stat in ("median_ms", "p95_ms")
            }
            for name in ours
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-worklist-") as tmp:
        work = Path(tmp)
        print("HL7 ORM^O01 throughput …", flush=True)
        hl7 = hl7_throughput(work, args.orders)
        print(hl7, flush=True)
        print("MWL C-FIND, micropacs and Orthanc …", flush=True)
        mwl = mwl_latency(work, args.items, args.queries)
    save("worklist", {"hl7_orm_throughput": hl7, "mwl_find": mwl})


if __name__ == "__main__":
    main()
