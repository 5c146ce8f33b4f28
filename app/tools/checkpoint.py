"""A long run's progress in one private JSON file, rewritten atomically after each step, so the same
command resumes after a Ctrl-C or a lost connection (`magqb import`, `magqb replay`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from app.private_files import private_dir


class Progress(Protocol):
    finished: bool


P = TypeVar("P", bound=Progress)


class Checkpoint(Generic[P]):
    def __init__(self, path: Path, kind: type[P]) -> None:
        self.path = path
        self.kind = kind

    def load(self) -> P | None:
        """The progress of an interrupted run, if there is one (a finished run starts afresh)."""
        try:
            progress = self.kind(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return None if progress.finished else progress

    def save(self, progress: P) -> None:
        private_dir(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        data: Any = asdict(progress)  # type: ignore[call-overload]  # a dataclass, as every Progress here is
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)
