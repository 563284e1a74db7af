"""Server-Sent Events as ``GET /events`` sends them (the WHATWG rules:
``field: value`` lines, a blank line ends a message, ``:`` starts a comment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional


@dataclass
class Message:
    event: str
    data: str
    id: Optional[str]


@dataclass
class Parser:
    """Fed one line at a time; returns a message when a blank line ends one.
    Comments (the daemon's keep-alives) give nothing."""

    _event: str = ""
    _data: List[str] = field(default_factory=list)
    last_id: Optional[str] = None

    def feed(self, raw: str) -> Optional[Message]:
        line = raw.rstrip("\r\n")
        if not line:
            message = None
            if self._data:
                message = Message(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self.last_id = value
        return None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """The messages of a stream of lines (with or without their line ends).
    A message cut off before its blank line is incomplete and dropped."""
    parser = Parser()
    for line in lines:
        message = parser.feed(line)
        if message is not None:
            yield message
