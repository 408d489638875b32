"""Kind metadata (names, printer columns) that the CRD generator and the handlers share."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from dpo_operator.api.common import GROUP


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str = ""

    def to_crd(self) -> dict[str, object]:
        column: dict[str, object] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            column["priority"] = self.priority
        if self.description:
            column["description"] = self.description
        return column


def status_columns() -> list[PrinterColumn]:
    """REASON and MESSAGE of the current phase, for ``kubectl get -o wide`` (every kind has them)."""
    return [PrinterColumn("Reason", "string", ".status.reason", priority=1,
                          description="CamelCase reason of the current phase"),
            PrinterColumn("Message", "string", ".status.message", priority=1,
                          description="Human-readable summary of the current phase")]


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: list[PrinterColumn] = field(default_factory=list)
    categories: tuple[str, ...] = ("dpo",)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
