"""Routing rules: a YAML file read once at start, matched against every stored instance.

A rule matches an ``instance.stored`` event on who sent it (calling AE title, the AE group
of that node in the registry), whom it was sent to (called AE title), its Modality and SOP
Class, and any header attribute, each with the C-FIND matching of PS3.4 C.2.2.2 (single
values, wildcards ``*`` and ``?``, date and time ranges, lists of UIDs):
:class:`~micropacs.dicom.matching.Matcher` is the matcher, and header attributes are
written as QIDO-RS query parameters are (PS3.18 8.3.4, :func:`micropacs.dicomweb.qido.parse`).
A key left out matches everything; a rule matches when all its keys do.

Its actions: ``forward`` to nodes of the registry by AE title, each optionally in a
transfer syntax micropacs can write (PS3.5 10, :mod:`micropacs.dicom.transcode`), and
``coerce`` (set, copy or remove attributes before storing), which the ingest applies
(:meth:`RuleSet.coercions`, :mod:`micropacs.routing.coercion`) to what it receives, matched
on the header as received; the router matches the header as stored. Every rule that
matches adds its destinations; a destination named by two matching rules gets the instance
once, in the first rule's syntax.

Whatever is wrong with the file is refused at start with
:class:`~micropacs.errors.InvalidSettings`, naming the rule and what to fix.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.types import StrictStr
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.levels import Level
from micropacs.dicom.matching import Matcher
from micropacs.dicom.transcode import ENCODABLE, UNCOMPRESSED
from micropacs.dicomweb import qido
from micropacs.errors import InvalidInput, InvalidSettings
from micropacs.events import InstanceStored
from micropacs.routing.coercion import BULK_START, dictionary_vr, typed
from micropacs.routing.coercion import Coercion as Coercion  # where rules are read, too

CALLING_AE = "calling_ae"
CALLED_AE = "called_ae"
AE_GROUP = "ae_group"
"""Keys of the matched record beside the header's tags: who sent the instance, to whom,
and the sender's AE group (no DICOM tag holds them; the matcher treats them as AE and LO
values)."""

SYNTAX_NAMES = {
    "explicit-vr-little-endian": str(ExplicitVRLittleEndian),
    "implicit-vr-little-endian": str(ImplicitVRLittleEndian),
    "jpeg2000-lossless": str(JPEG2000Lossless),
    "jpeg2000": str(JPEG2000),
    "jpeg-ls-lossless": str(JPEGLSLossless),
    "jpeg-ls-near-lossless": str(JPEGLSNearLossless),
    "rle-lossless": str(RLELossless),
}
"""The transfer syntaxes a rule may name, by name (their UIDs are accepted too)."""
WRITABLE = frozenset(str(uid) for uid in (*UNCOMPRESSED, *ENCODABLE))

IDENTITY = frozenset(
    {
        tags.SOP_INSTANCE_UID,
        tags.SOP_CLASS_UID,
        tags.SERIES_INSTANCE_UID,
        tags.STUDY_INSTANCE_UID,
    }
)
"""Attributes a coercion may not touch: they name the object and where it is stored."""

Values = StrictStr | list[StrictStr] | None


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calling_ae: Values = None
    called_ae: Values = None
    ae_group: Values = None
    modality: Values = None
    sop_class: Values = None
    attributes: dict[str, str | int | float | list[str]] = Field(default_factory=dict)


class _Forward(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: StrictStr = Field(min_length=1, max_length=16)
    transfer_syntax: StrictStr = ""


class _Coerce(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    set_: StrictStr | None = Field(None, alias="set")
    value: StrictStr | int | float | None = None
    copy_: StrictStr | None = Field(None, alias="copy")
    to: StrictStr | None = None
    remove: StrictStr | None = None

    @model_validator(mode="after")
    def _one_action(self) -> _Coerce:
        given = [name for name in ("set_", "copy_", "remove") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("each coercion is one of set (with value), copy (with to) or remove")
        if self.set_ is not None and self.value is None:
            raise ValueError(f"set {self.set_} needs a value")
        if self.copy_ is not None and self.to is None:
            raise ValueError(f"copy {self.copy_} needs to: the attribute to copy it into")
        if (self.value is not None and self.set_ is None) or (
            self.to is not None and self.copy_ is None
        ):
            raise ValueError("value goes with set, to goes with copy")
        return self


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=64)
    match: _Match = Field(default_factory=_Match)
    forward: list[_Forward] = Field(default_factory=list)
    coerce: list[_Coerce] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_action(self) -> _Rule:
        if not self.forward and not self.coerce:
            raise ValueError("a rule needs an action: forward, coerce or both")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[_Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class Forward:
    """Send the instance to ``destination`` (an AE title of the node registry), in
    ``transfer_syntax`` ("" for as stored), because of ``rule``."""

    destination: str
    transfer_syntax: str
    rule: str


@dataclass(frozen=True)
class Rule:
    """One rule: what it matches and what it does."""

    name: str
    matcher: Matcher
    forwards: tuple[Forward, ...]
    coercions: tuple[Coercion, ...]
    uses_ae_group: bool


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file, in their order."""

    rules: tuple[Rule, ...] = ()

    @property
    def destinations(self) -> frozenset[str]:
        """Every AE title some rule forwards to."""
        return frozenset(f.destination for rule in self.rules for f in rule.forwards)

    @property
    def uses_ae_group(self) -> bool:
        """Whether a rule matches on the sender's AE group (then the registry is read)."""
        return any(rule.uses_ae_group for rule in self.rules)

    @property
    def coerces(self) -> bool:
        """Whether some rule coerces (else the ingest stores objects as received)."""
        return any(rule.coercions for rule in self.rules)

    def coercions(
        self, header: DicomJson, sop_class_uid: str, calling_ae: str, called_ae: str, ae_group: str
    ) -> list[Coercion]:
        """What to change in a received object before storing it, in the order of the
        matching rules and of each rule's list: its ``header`` (DICOM JSON, as received),
        sent by ``calling_ae`` of ``ae_group`` to ``called_ae``."""
        coercing = [rule for rule in self.rules if rule.coercions]
        if not coercing:
            return []
        matched = record(header, sop_class_uid, calling_ae, called_ae, ae_group)
        return [c for rule in coercing if rule.matcher(matched) for c in rule.coercions]

    def matching(self, event: InstanceStored, ae_group: str = "") -> list[Rule]:
        """The rules ``event`` matches, its sender being of ``ae_group``."""
        record = record_of(event, ae_group)
        return [rule for rule in self.rules if rule.matcher(record)]

    def forwards(self, event: InstanceStored, ae_group: str = "") -> list[Forward]:
        """Where ``event``'s instance goes: one forward per destination, the first
        matching rule's when several name it."""
        chosen: dict[str, Forward] = {}
        for rule in self.matching(event, ae_group):
            for forward in rule.forwards:
                chosen.setdefault(forward.destination, forward)
        return list(chosen.values())


def record_of(event: InstanceStored, ae_group: str) -> Mapping[str, Any]:
    """What rules match against: the header, with the event's own SOP Class and who sent
    the instance to whom."""
    return record(event.header, event.sop_class_uid, event.calling_ae, event.called_ae, ae_group)


def record(
    header: DicomJson, sop_class_uid: str, calling_ae: str, called_ae: str, ae_group: str
) -> Mapping[str, Any]:
    """What rules match against, for the ingest (before any event) and the router alike:
    ``header`` with the SOP Class and who sent the instance to whom."""
    own: DicomJson = {
        CALLING_AE: element("AE", calling_ae),
        CALLED_AE: element("AE", called_ae),
        AE_GROUP: element("LO", ae_group) if ae_group else element("LO"),
        tags.SOP_CLASS_UID: element("UI", sop_class_uid),
    }
    return ChainMap(own, header)


def load_rules(path: Path) -> RuleSet:
    """The rules of the YAML file at ``path``; InvalidSettings says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSettings(f"routing rules {path}: cannot read the file: {exc}") from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "routing rules") -> RuleSet:
    """The rules of a YAML document; InvalidSettings names the rule and what to fix."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSettings(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidSettings(f"{source}: expected a mapping with a 'rules' list")
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSettings(_explained(exc, raw, source)) from None
    names: set[str] = set()
    rules = []
    for index, rule in enumerate(parsed.rules):
        where = f"{source}: rule {rule.name!r} (rules[{index}])"
        if rule.name in names:
            raise InvalidSettings(f"{where}: another rule has this name; names must differ")
        names.add(rule.name)
        try:
            rules.append(_compiled(rule))
        except InvalidInput as exc:
            raise InvalidSettings(f"{where}: {exc}") from None
    return RuleSet(tuple(rules))


def _explained(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    """The first problem pydantic found, said as which rule and which key."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    where = source
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        items = raw.get("rules")
        name = ""
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            name = str(items[index].get("name", ""))
        where += f": rule {name!r} (rules[{index}])" if name else f": rules[{index}]"
        loc = loc[2:]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    # A failed union reports each branch: keep the key, not the branch's type name.
    path = path.replace(".str", "").replace(".list[str]", "").replace(".int", "")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {path + ': ' if path else ''}{message}"


def _values(given: str | list[str] | None) -> list[str]:
    if given is None:
        return []
    return [given] if isinstance(given, str) else list(given)


def _compiled(rule: _Rule) -> Rule:
    match = rule.match
    identifier: DicomJson = {}
    for key, vr, given in (
        (CALLING_AE, "AE", match.calling_ae),
        (CALLED_AE, "AE", match.called_ae),
        (AE_GROUP, "LO", match.ae_group),
        (tags.MODALITY, "CS", match.modality),
        (tags.SOP_CLASS_UID, "UI", match.sop_class),
    ):
        values = _values(given)
        if values:
            identifier[key] = element(vr, *values)
    identifier.update(_attributes(match.attributes))
    try:
        matcher = Matcher(identifier)
    except InvalidInput as exc:
        raise InvalidInput(f"match: {exc}") from None
    forwards = []
    for index, forward in enumerate(rule.forward):
        _check_ae_title(forward.destination, f"forward[{index}].destination")
        syntax = _syntax(forward.transfer_syntax, f"forward[{index}].transfer_syntax")
        forwards.append(Forward(forward.destination, syntax, rule.name))
    coercions = tuple(_coercion(c, f"coerce[{i}]") for i, c in enumerate(rule.coerce))
    return Rule(
        name=rule.name,
        matcher=matcher,
        forwards=tuple(forwards),
        coercions=coercions,
        uses_ae_group=bool(_values(match.ae_group)),
    )


def _attributes(attributes: Mapping[str, str | int | float | list[str]]) -> DicomJson:
    """Header keys as QIDO-RS reads ``{attributeID}={value}`` (a list: any of its values)."""
    found: DicomJson = {}
    for name, given in attributes.items():
        values = [str(v) for v in given] if isinstance(given, list) else [str(given)]
        merged: DicomJson | None = None
        for value in values:
            try:
                identifier = qido.parse(Level.IMAGE, [(name, value)]).identifier
            except InvalidInput as exc:
                raise InvalidInput(f"match.attributes.{name}: {exc}") from None
            tag = _tag(name, f"match.attributes.{name}")
            key = identifier[tag]
            if merged is None:
                merged = dict(key)
            else:
                merged["Value"] = [*merged.get("Value", []), *key.get("Value", [])]
        if merged is not None:
            found[_tag(name, name)] = merged
    return found


def _tag(name: str, where: str) -> str:
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidInput(f"{where}: {name!r} is neither a DICOM keyword nor a tag like 00100010")
    return f"{tag:08X}"


def _check_ae_title(title: str, where: str) -> None:
    """An AE title (PS3.5 6.2, AE): up to 16 characters, no backslash or control character,
    not only spaces."""
    if not title.strip() or "\\" in title or any(ord(c) < 0x20 or ord(c) > 0x7E for c in title):
        raise InvalidInput(f"{where}: {title!r} is not an AE title (1-16 ASCII, no backslash)")


def _syntax(given: str, where: str) -> str:
    """The UID of a transfer syntax a rule names ("" for as stored)."""
    name = given.strip()
    if name in ("", "as-stored"):
        return ""
    uid = SYNTAX_NAMES.get(name.lower(), name)
    if uid not in WRITABLE:
        choices = ", ".join(["as-stored", *SYNTAX_NAMES])
        raise InvalidInput(f"{where}: {given!r} is not a syntax micropacs can write: {choices}")
    return uid


def _coercion(coerce: _Coerce, where: str) -> Coercion:
    if coerce.remove is not None:
        return Coercion("remove", _target(coerce.remove, f"{where}.remove"))
    if coerce.copy_ is not None:
        assert coerce.to is not None
        source = _tag(coerce.copy_, f"{where}.copy")
        if int(source, 16) >= BULK_START:
            raise InvalidInput(f"{where}.copy: {coerce.copy_} is pixel data or after it")
        return Coercion("copy", _target(coerce.to, f"{where}.to"), source=source)
    assert coerce.set_ is not None and coerce.value is not None
    tag = _target(coerce.set_, f"{where}.set")
    value = str(coerce.value)
    if not int(tag, 16) >> 16 & 1 and value:  # a private VR depends on the object's creator
        try:
            typed(dictionary_vr(int(tag, 16)), value)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.value: {exc}") from None
    return Coercion("set", tag, value=value)


def _target(name: str, where: str) -> str:
    """A tag a coercion may change: not the object's identity, no file meta, no sequence,
    nothing from the pixel data on (the ingest copies those bytes as they came)."""
    tag = _tag(name, where)
    if tag in IDENTITY or tag.startswith(("0000", "0002")):
        raise InvalidInput(f"{where}: {name} names the object; it cannot be coerced")
    if int(tag, 16) >= BULK_START:
        raise InvalidInput(f"{where}: {name} is pixel data or after it; it cannot be coerced")
    try:
        vr = str(dictionary_VR(int(tag, 16)))
    except KeyError:
        vr = "UN"
    if vr == "SQ":
        raise InvalidInput(f"{where}: {name} is a sequence; coerce the attributes in its items")
    return tag
