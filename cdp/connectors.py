"""What a source connector is, for the people who write one.

A connector declares its configuration schema (marshmallow), can check its
connection, lists its streams and reads records in the common record model,
in batches, each with the cursor that resumes after it. The platform stores
a batch and only then saves its cursor, so a crash re-reads, never skips.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from marshmallow import Schema, ValidationError


class ConnectorError(Exception):
    """A problem the operator can fix; the message says what (no personal data)."""


@dataclass
class Batch:
    records: list[dict]
    cursor: Any = None  # resumes reading right after this batch
    # Rows the connector could not turn into records: (position, {field: [messages]}).
    errors: list[tuple[str, dict]] = field(default_factory=list)


class SourceConnector:
    name: ClassVar[str]
    config_schema: ClassVar[type[Schema]]

    def __init__(self, config: dict):
        try:
            self.config = self.config_schema().load(config)
        except ValidationError as exc:
            raise ConnectorError(f"{self.name}: invalid configuration: {exc.messages}") from None

    def check(self) -> None:
        """Raise ConnectorError when the source cannot be read."""

    def streams(self) -> list[str]:
        return ["default"]

    def read(self, stream: str = "default", cursor: Any = None, batch_size: int = 500) -> Iterator[Batch]:
        raise NotImplementedError
