"""What goes in and out of the sandbox: `Limits`, `ExecutionResult`, and the framed JSON wire format
between the controller and its fork servers. Standard library only: the fork server imports it.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any, BinaryIO


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program limits. The defaults fit the MMOS method: 5 s per program (mmos-method.md §3)."""

    timeout_s: float = 5.0  # wall clock; the whole process group is killed after it
    cpu_s: int | None = None  # RLIMIT_CPU; None = ceil(timeout_s)
    memory_mb: int = 2048  # RLIMIT_AS, address space of each process
    file_size_mb: int = 16  # RLIMIT_FSIZE, and the size of the private /tmp
    max_processes: int = 16  # processes of one program, itself included
    max_output_bytes: int = 256 * 1024  # stdout and stderr each; beyond it the program is stopped

    def __post_init__(self):
        for name in ("timeout_s", "memory_mb", "file_size_mb", "max_processes", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_s if self.cpu_s is not None else max(1, int(self.timeout_s + 0.999))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one program. Failures of the program are data here, never exceptions."""

    stdout: str = ""  # everything printed, up to Limits.max_output_bytes
    stderr: str = ""
    error: str = ""  # the last traceback line ("ZeroDivisionError: division by zero"), or why it was stopped
    exit_code: int | None = None  # None when killed by a signal
    signal: str | None = None  # e.g. "SIGSEGV", "SIGKILL"
    timeout: bool = False  # wall clock or CPU time ran out
    memory_exceeded: bool = False
    killed: bool = False  # stopped by a signal (ours or the kernel's)
    output_truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timeout and not self.killed and not self.output_truncated

    @property
    def last_line(self) -> str:
        """The last non-empty stdout line: the view ToRA/MMOS feed back to the model."""
        for line in reversed(self.stdout.splitlines()):
            if line.strip():
                return line.strip()
        return ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExecutionResult":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


_HEADER = struct.Struct(">I")


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    payload = json.dumps(message, ensure_ascii=False).encode("utf-8")
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at end of stream (the other side is gone)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    payload = _read_exactly(stream, size)
    if payload is None:
        return None
    return json.loads(payload.decode("utf-8"))


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
