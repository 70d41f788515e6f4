"""Pure summaries over the results frame: Pareto fronts and latency columns."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def pareto_front(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.Series:
    """True for rows that no other row dominates (at least as good in every objective, better in one).
    ``objectives``: (column, "max" | "min"). Rows missing an objective are never on the front."""
    complete = frame[[c for c, _ in objectives]].notna().all(axis=1)
    signed = pd.DataFrame({c: frame[c] if mode == "max" else -frame[c] for c, mode in objectives})
    on_front = []
    for i in frame.index:
        if not complete[i]:
            on_front.append(False)
            continue
        others = signed[complete & (signed.index != i)]
        dominated = ((others >= signed.loc[i]).all(axis=1) & (others > signed.loc[i]).any(axis=1)).any()
        on_front.append(not dominated)
    return pd.Series(on_front, index=frame.index)


def latency_columns(latencies: list[dict]) -> pd.DataFrame:
    """One row per trial, one ``<backend>@<target> p50 ms`` column per measured backend and target, and beside it
    ``<backend>@<target> mJ/img`` where that device measured energy."""
    rows: dict[str, dict[str, object]] = {}
    energy = {(r["backend"], r["target"]) for r in latencies if r.get("energy_mj") is not None}
    for r in latencies:
        where = f"{r['backend']}@{r['target']}"
        row = rows.setdefault(r["trial_id"], {})
        row[f"{where} p50 ms"] = round(r["p50_ms"], 3) if r["status"] == "ok" else "failed"
        if (r["backend"], r["target"]) in energy:
            row[f"{where} mJ/img"] = round(r["energy_mj"], 2) if r.get("energy_mj") is not None else "–"
    return pd.DataFrame.from_dict(rows, orient="index")
