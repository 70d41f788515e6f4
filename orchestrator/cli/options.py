"""Options and parsers shared by the commands."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from orchestrator.errors import SegsweepError

SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a dotted key: --set optimizer.lr=3e-4")]
ServerOption = Annotated[Optional[str], typer.Option("--server", help="the service's URL (default $SEGSWEEP_SERVER "
                                                     "or http://127.0.0.1:8765)")]
TokenOption = Annotated[Optional[str], typer.Option("--token", help="your token (default $SEGSWEEP_TOKEN)")]


class TextFormat(str, Enum):
    text = "text"
    json = "json"


class TableFormat(str, Enum):
    md = "md"
    json = "json"


class ReportFormat(str, Enum):
    md = "md"
    html = "html"
    json = "json"


# ``--format`` of every command: its choices checked by the CLI itself (a one-line usage error naming them)
TextFormatOption = Annotated[TextFormat, typer.Option("--format", help="text or json")]
TableFormatOption = Annotated[TableFormat, typer.Option("--format", help="md or json")]
ReportFormatOption = Annotated[ReportFormat, typer.Option("--format", help="md, html or json")]


def hw(text: str, option: str) -> tuple[int, int]:
    """``256x320`` -> (256, 320); anything else is a one-line error naming the option."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegsweepError(f"{option} {text}: expected HxW, e.g. 256x320") from None
    return height, width
