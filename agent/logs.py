"""Log set-up: sentences for people, or one JSON object a line for machines."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message

TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss} {level: <7} {message}"


def configure(*, level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send medic's logs to ``stream`` (default stderr) in ``fmt`` (text or json)."""
    out = stream or sys.stderr
    logger.remove()
    if fmt == "json":

        def sink(message: Message) -> None:
            record = message.record
            line = {
                "time": record["time"].isoformat(),
                "level": record["level"].name,
                "message": record["message"],
                **{k: str(v) for k, v in record["extra"].items()},
            }
            if record["exception"] is not None:
                line["exception"] = str(record["exception"].value)
            out.write(json.dumps(line) + "\n")
            out.flush()

        logger.add(sink, level=level.upper())
    else:
        logger.add(out, level=level.upper(), format=TEXT_FORMAT, colorize=False)
