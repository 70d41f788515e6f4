"""Read W&B offline ``.wandb`` files in tests: a ``:W&B`` header, then a LevelDB-style log of protobuf Records.

wandb 0.31 ships no Python reader for its transaction log (the writer is wandb-core, in Go), so tests read it
here with the record format it uses: 32 KiB blocks of [crc32 (4) | length (2, LE) | type (1) | payload] chunks.
"""

from __future__ import annotations

import json
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending, payloads = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer too small for a header: padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
    return [pb.Record.FromString(p) for p in payloads]


def history(path: str | Path) -> list[dict[str, object]]:
    """The logged history rows (one per ``run.log`` call) as {key: value}."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def config(path: str | Path) -> dict[str, object]:
    """The run's config: the one it started with (run record) plus later updates (config records)."""
    out: dict[str, object] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in updates:
            out[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return out
