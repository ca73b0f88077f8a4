"""HL7 v2 messages as a RIS sends them (IHE RAD TF-2 RAD-1, RAD-4, RAD-12, RAD-13)."""

from __future__ import annotations

CHARSET_NAMES = {"ASCII": "", "8859/1": "8859/1", "8859/2": "8859/2", "UTF-8": "UNICODE UTF-8"}


def msh(kind: str, control: str = "MSG1", version: str = "2.5.1", charset: str = "") -> str:
    return (
        f"MSH|^~\\&|RIS|HOSP|MICROPACS|RAD|20260102030405||{kind}|{control}|P|{version}"
        f"||||||{charset}"
    )


PID = "PID|1||PAT-7^^^HOSP&1.2.3&ISO||Novák^Jiří^^^Ing.||19700131|M"
PV1 = "PV1|1|O|RAD^101^2|||||1234^Welby^Marcus^^^Dr|||||||||||V-9"


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number (absent ones empty)."""
    return "|".join([name] + [fields.get(n, "") for n in range(1, max(fields) + 1)])


def orm(
    control: str = "NW",
    *,
    pid: str = PID,
    zds: str = "ZDS|1.2.3.4.5^MICROPACS^Application^DICOM",
    charset: str = "",
    version: str = "2.3.1",
    msg_id: str = "ORM1",
) -> str:
    """An ORM^O01 of IHE RAD-4/RAD-13: ORC-1 ``control``, OBR-18/19/20, OBR-24, OBR-27.4."""
    segments = [
        msh("ORM^O01", msg_id, version, charset),
        pid,
        PV1,
        segment("ORC", {1: control, 2: "PL-1", 3: "FL-1", 5: "SC", 12: "5678^House^Gregory"}),
        segment(
            "OBR",
            {
                1: "1",
                2: "PL-1",
                3: "FL-1",
                4: "CT-HEAD^CT head^LOCAL^P1^Head without contrast^LOCAL",
                12: "pacemaker",
                13: "isolation",
                18: "ACC-1",
                19: "RP-1",
                20: "SPS-1",
                24: "CT",
                27: "^^^202601051030^^S",
                30: "WHEEL",
                31: "^headache",
                34: "T1&Tech&Anna",
            },
        ),
    ]
    if zds:
        segments.append(zds)
    return "\r".join(segments) + "\r"


def omi(control: str = "NW", charset: str = "") -> str:
    """An OMI^O23 of IHE RAD-4 (HL7 v2.5.1): TQ1-7 start, two IPC steps."""
    return (
        "\r".join(
            [
                msh("OMI^O23^OMI_O23", "OMI1", "2.5.1", charset),
                PID,
                PV1,
                f"ORC|{control}|PL-2|FL-2||SC",
                "TQ1|1||||||20260106141500||A",
                "OBR|1|PL-2|FL-2|MR-KNEE^MR knee^LOCAL",
                "IPC|ACC-2|RP-2|1.2.840.99.1|SPS-A|MR|P-1^Knee T1^LOCAL|MR1~MR1B|ROOM 3"
                "|MR_AE1~MR_AE2",
                "IPC|ACC-2|RP-2|1.2.840.99.1|SPS-B|MR|P-2^Knee T2^LOCAL|MR1|ROOM 3|MR_AE1",
            ]
        )
        + "\r"
    )


def adt(trigger: str, pid: str = PID, charset: str = "", extra: str = "") -> str:
    segments = [msh(f"ADT^{trigger}", "ADT1", "2.5.1", charset), "EVN||20260102", pid]
    if extra:
        segments.append(extra)
    segments.append("PV1|1|O")
    return "\r".join(segments) + "\r"
