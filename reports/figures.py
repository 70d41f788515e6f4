"""Plotly figures: each takes a DataFrame and returns a Figure. Tests assert on frames, not pictures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def metric_by(results: pd.DataFrame, metric: str, key: str, title: str) -> go.Figure:
    """Best ``metric`` of each trial grouped by a config key (box + points)."""
    col, by = f"metric/{metric}", f"config/{key}"
    if col not in results or results[col].isna().all():
        return go.Figure().update_layout(title=f"{title}: no results yet")
    frame = results.dropna(subset=[col])
    if by not in frame:
        frame = frame.assign(**{by: "(fixed)"})
    fig = px.box(frame, x=by, y=col, points="all", hover_data=["id", "status"], title=title)
    return fig.update_layout(xaxis_title=key, yaxis_title=metric)


def training_curves(history: pd.DataFrame, metric: str) -> go.Figure:
    """``metric`` per epoch, one line per trial."""
    frame = history.dropna(subset=[metric]) if metric in history else history.iloc[0:0].assign(id=[], epoch=[])
    fig = px.line(frame, x="epoch", y=metric if metric in frame else None, color="id", markers=True,
                  title=f"{metric} per epoch")
    return fig.update_layout(legend_title="trial")


def speed_frame(results: pd.DataFrame, latencies: list[dict]) -> pd.DataFrame:
    """Trials with a latency: measured rows (one per backend@target) or, without any, the trial's proxy."""
    label = results.get("config/model.arch", pd.Series("", index=results.index)).astype(str) + " " + results.get(
        "config/model.encoder", pd.Series("", index=results.index)).astype(str)
    base = results.assign(model=label.str.replace(" None", "").str.strip())
    measured = [r for r in latencies if r["status"] == "ok"]
    if measured:
        lat = pd.DataFrame([{"id": r["trial_id"], "latency_ms": r["p50_ms"], "where": f"{r['backend']}@{r['target']}"}
                            for r in measured])
        return base.merge(lat, on="id")
    if "metric/latency/p50_ms" in base:
        return base.dropna(subset=["metric/latency/p50_ms"]).assign(latency_ms=lambda f: f["metric/latency/p50_ms"],
                                                                     where="proxy")
    return base.iloc[0:0]


def speed_vs_accuracy(speed: pd.DataFrame, metric: str) -> go.Figure:
    """Seed 000's speed-vs-accuracy chart: p50 latency against the metric, the Pareto front joined by a line."""
    col = f"metric/{metric}"
    fig = px.scatter(speed, x="latency_ms", y=col, color="where", symbol="pareto", hover_data=["id", "model"],
                     title=f"{metric} vs p50 latency (Pareto front joined)")
    front = speed[speed["pareto"]].sort_values("latency_ms")
    fig.add_trace(go.Scatter(x=front["latency_ms"], y=front[col], mode="lines", name="Pareto front",
                             line={"dash": "dash"}))
    return fig.update_layout(xaxis_title="p50 latency (ms)", yaxis_title=metric)


def latency_bars(speed: pd.DataFrame) -> go.Figure:
    """p50 latency per model (trial), one bar per backend@target."""
    frame = speed.assign(label=speed["model"] + " (" + speed["id"] + ")")
    fig = px.bar(frame, x="label", y="latency_ms", color="where", barmode="group", title="p50 latency per model")
    return fig.update_layout(xaxis_title="model (trial)", yaxis_title="p50 latency (ms)")


def parallel_coordinates(results: pd.DataFrame, domains: dict, metric: str) -> go.Figure:
    """Every finished trial as a line through its searched values to its ``metric`` (W&B's sweep view, offline):
    choices on categorical axes, log-uniform values as log10."""
    col = f"metric/{metric}"
    frame = results.dropna(subset=[col]) if col in results else results.iloc[0:0]
    dims = []
    for key, domain in domains.items():
        values = frame.get(f"config/{key}")
        if values is None:
            continue
        if domain["kind"] == "choice":
            labels = [str(v) for v in domain["values"]]
            dims.append({"label": key, "values": values.astype(str).map({v: i for i, v in enumerate(labels)}),
                         "tickvals": list(range(len(labels))), "ticktext": labels})
        elif domain["kind"] == "loguniform":
            dims.append({"label": f"log10 {key}", "values": np.log10(values.astype(float))})
        else:
            dims.append({"label": key, "values": values.astype(float)})
    dims.append({"label": metric, "values": frame[col] if col in frame else []})
    fig = go.Figure(go.Parcoords(line={"color": frame[col] if col in frame else [], "colorscale": "Viridis",
                                       "showscale": True}, dimensions=dims))
    return fig.update_layout(title=f"searched values -> {metric} (one line per finished trial)")


def importance_bars(importances: dict[str, float], metric: str) -> go.Figure:
    fig = px.bar(x=list(importances), y=list(importances.values()), title=f"importance for {metric} (fANOVA)")
    return fig.update_layout(xaxis_title="searched key", yaxis_title="importance")
