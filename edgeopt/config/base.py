"""The bases every config section builds on, including the target sections defined in each target's package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """Base of every config section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class TargetSection(Strict):
    """One runtime and the precisions to export for it. Each target narrows ``name`` to its own literal,
    ``precisions`` to what it offers and ``options`` to its typed options."""

    name: str
    precisions: list[str] = Field(default_factory=lambda: ["fp32"])

    @field_validator("precisions")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one precision")
        return list(dict.fromkeys(v))


class NoOptions(Strict):
    """A target without options: any key is a typo."""
