"""Model-wise comparison table: pure functions over the results frame."""

from __future__ import annotations

import math
import re

import pandas as pd

# config key -> column title, in table order
CONFIG_COLUMNS = {
    "model.arch": "arch",
    "model.encoder": "encoder",
    "loss.name": "loss",
    "schedule.name": "schedule",
    "optimizer.lr": "lr",
}


def ranked(results: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Trials sorted best first by their best ``metric``; trials without it (failed, not started) last."""
    col = f"metric/{metric}"
    if results.empty:
        return results
    frame = results.copy()
    if col not in frame:
        frame[col] = math.nan
    frame = frame.sort_values(col, ascending=mode == "min", na_position="last", kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", pd.array([i + 1 if pd.notna(v) else None for i, v in enumerate(frame[col])], dtype="Int64"))
    return frame


def comparison_table(results: pd.DataFrame, metric: str, mode: str, classes: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """rank, arch, encoder, loss, schedule, lr, best metric, per-class IoU, params M, size MB, GMACs (at the training
    size, counter in models/complexity.py), epochs, train time."""
    frame = ranked(results, metric, mode)
    if frame.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"rank": frame["rank"], "trial": frame["id"]})
    for key, title in CONFIG_COLUMNS.items():
        out[title] = frame.get(f"config/{key}")
    out[metric] = frame[f"metric/{metric}"]
    for name in classes:
        out[f"IoU {name}"] = frame.get(f"metric/val/iou/{name}")
    out["params M"] = frame["params_m"].astype(float).round(2)
    out["size MB"] = frame["size_mb"].astype(float).round(1)
    out["GMACs"] = frame["gmacs"].astype(float).round(2)
    out["epochs"] = frame["epochs"]
    out["train s"] = frame["train_seconds"].astype(float).round(1)
    out["status"] = frame["status"]
    return out


_MARKUP = str.maketrans({c: "\\" + c for c in "\\`[]<>|"})


def md(value: object) -> str:
    """Text a user controls (a class name, a config value, an error line) as markdown that shows it, nothing more:
    no link, image, HTML or code span can come of it, and a table's ``|`` stays in its cell."""
    return str(value).translate(_MARKUP)


def code(value: object) -> str:
    """``value`` as an inline code span, whatever backticks it holds (the fence is longer than any run of them)."""
    text = str(value)
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return f"{'`' * (longest + 1)} {text} {'`' * (longest + 1)}" if longest else f"`{text}`"


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        # metrics in [0, 1] to 4 decimals; small values (learning rates) in 3 significant digits; others as rounded
        return f"{value:.3g}" if 0 < abs(value) < 1e-2 else f"{value:.4f}" if abs(value) <= 1 else f"{value:g}"
    return md(value)


def varying_keys(results: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between trials: the searched ones."""
    cols = [c for c in results if c.startswith("config/")]
    return [c[len("config/"):] for c in cols if results[c].astype(str).nunique() > 1]


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown; metrics to 4 decimals, learning rates to 3 significant digits."""
    if table.empty:
        return "_no trials_\n"
    header = "| " + " | ".join(md(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
