"""docs/configuration.md lists every setting, so operators can find them all."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from micropacs.config import Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def variables(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += variables(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in variables(Settings, "MICROPACS_") if f"`{name}`" not in text]
    assert missing == []


def test_nested_variables_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROPACS_DICOM__PORT", "104")
    monkeypatch.setenv("MICROPACS_QUERY__CASE_INSENSITIVE_PN", "true")
    settings = Settings()
    assert settings.dicom.port == 104
    assert settings.query.case_insensitive_pn is True
