"""Plotly figures: each takes a DataFrame and returns a Figure. Tests assert on frames, not pictures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from orchestrator.store import STAGE1


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




def trial_labels(results: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """A legend entry per trial that names its searched values: ``3f2a1c0d arch=unet loss=dice lr=0.00231``
    (a key's last part; ``loss.name`` is ``loss``)."""
    labels = {}
    for row in results.to_dict("records"):
        parts = []
        for key in keys:
            value = row.get(f"config/{key}")
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            short = key.rsplit(".", 1)[-1]
            parts.append(f"{key.split('.')[0] if short == 'name' else short}={shown}")  # loss.name -> loss
        labels[row["id"]] = " ".join([row["id"], *parts])
    return labels


def _curves(history: pd.DataFrame, metric: str, labels: dict[str, str]) -> pd.DataFrame:
    """``metric`` per trial and epoch in long form, a staged model's first stage (``stage1/<metric>``) as its own
    series beside the full network's."""
    parts = []
    for column, stage in ((metric, "full network"), (STAGE1 + metric, "stage 1")):
        if column in history:
            rows = history.dropna(subset=[column])
            parts.append(pd.DataFrame({"id": rows["id"], "epoch": rows["epoch"], "value": rows[column],
                                       "stage": stage}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "epoch", "value", "stage"])
    return frame.assign(trial=frame["id"].map(lambda i: labels.get(i, i)))


def training_curves(history: pd.DataFrame, metric: str, labels: dict[str, str] | None = None) -> go.Figure:
    """``metric`` per epoch, one line per trial (legend: its searched values); a staged model's first stage dashed."""
    frame = _curves(history, metric, labels or {})
    staged = frame["stage"].eq("stage 1").any()
    fig = px.line(frame, x="epoch", y="value", color="trial", line_dash="stage" if staged else None, markers=True,
                  title=f"{metric} per epoch" + (" (dashed: stage 1, the encoder alone)" if staged else ""))
    return fig.update_layout(legend_title="trial", yaxis_title=metric)


def loss_curves(history: pd.DataFrame, results: pd.DataFrame, labels: dict[str, str] | None = None,
                metric: str = "val/loss") -> go.Figure:
    """``val/loss`` per epoch in one panel per loss function, each on its own axis: the losses' scales differ (a
    Tversky loss near 1 beside a cross-entropy of 36 would flatten the other curves)."""
    frame = _curves(history, metric, labels or {})
    loss = results.set_index("id")["config/loss.name"] if "config/loss.name" in results else pd.Series(dtype=str)
    frame = frame.assign(loss=frame["id"].map(loss).fillna("(fixed)").astype(str))
    fig = px.line(frame, x="epoch", y="value", color="trial", facet_col="loss", facet_col_wrap=2, markers=True,
                  line_dash="stage" if frame["stage"].eq("stage 1").any() else None,
                  title=f"{metric} per epoch, by loss function (each on its own scale)")
    fig.update_yaxes(matches=None, showticklabels=True, title_text="")
    return fig.update_layout(legend_title="trial", yaxis_title=metric)


def metric_vs_value(results: pd.DataFrame, key: str, domain: dict, metric: str) -> go.Figure:
    """Each finished trial's best ``metric`` against its value of a continuous searched ``key`` (log axis for a
    log-uniform domain)."""
    col, by = f"metric/{metric}", f"config/{key}"
    frame = results.dropna(subset=[col]) if col in results and by in results else results.iloc[0:0]
    fig = px.scatter(frame, x=by if by in frame else None, y=col if col in frame else None,
                     color="status" if "status" in frame else None, hover_data=["id"] if "id" in frame else None,
                     log_x=domain.get("kind") == "loguniform", title=f"{metric} against {key}")
    return fig.update_layout(xaxis_title=key, yaxis_title=metric)


def cost_frames(results: pd.DataFrame, latencies: list[dict], measured_key: str, proxy_metric: str,
                column: str) -> list[pd.DataFrame]:
    """Trials with a cost (``column``: a latency or an energy), as the search saw it (the latency proxy's
    ``proxy_metric``: infeasible trials, over budget and never trained, are there with no accuracy) and as measured
    after training (one row per backend@target of the store's latency rows, ``measured_key``): each frame where it
    has rows."""
    label = results.get("config/model.arch", pd.Series("", index=results.index)).astype(str) + " " + results.get(
        "config/model.encoder", pd.Series("", index=results.index)).astype(str)
    base = results.assign(model=label.str.replace(" None", "").str.strip())
    frames = []
    if f"metric/{proxy_metric}" in base:
        frames.append(base.dropna(subset=[f"metric/{proxy_metric}"]).assign(
            **{column: lambda f: f[f"metric/{proxy_metric}"], "where": "proxy"}))
    measured = [r for r in latencies if r["status"] == "ok" and r.get(measured_key) is not None]
    if measured:
        cost = pd.DataFrame([{"id": r["trial_id"], column: r[measured_key], "where": f"{r['backend']}@{r['target']}"}
                             for r in measured])
        frames.append(base.merge(cost, on="id"))
    return [frame for frame in frames if not frame.empty]


def speed_frames(results: pd.DataFrame, latencies: list[dict]) -> list[pd.DataFrame]:
    """Trials with a p50 latency (``latency_ms``): the proxy's, and measured."""
    return cost_frames(results, latencies, "p50_ms", "latency/p50_ms", "latency_ms")


def energy_frames(results: pd.DataFrame, latencies: list[dict]) -> list[pd.DataFrame]:
    """Trials with an energy per image (``energy_mj``): the proxy's, and measured on a device."""
    return cost_frames(results, latencies, "energy_mj", "energy/mj_per_image", "energy_mj")


def cost_vs_accuracy(frame: pd.DataFrame, metric: str, column: str, title: str, axis: str) -> go.Figure:
    """Seed 000's speed-vs-accuracy chart, for any cost: the cost against the metric, the Pareto front joined by a
    line, infeasible trials (over a budget, never trained: no accuracy) as crosses along the bottom."""
    col = f"metric/{metric}"
    infeasible = frame["status"].eq("infeasible") if "status" in frame else pd.Series(False, index=frame.index)
    where = " ".join(sorted(set(frame["where"])))
    fig = px.scatter(frame[~infeasible], x=column, y=col, color="where", symbol="pareto", hover_data=["id", "model"],
                     title=f"{metric} vs {title}, {where} (Pareto front joined)")
    front = frame[frame["pareto"]].sort_values(column)
    fig.add_trace(go.Scatter(x=front[column], y=front[col], mode="lines", name="Pareto front", line={"dash": "dash"}))
    if infeasible.any():
        floor = frame.loc[~infeasible, col].min()
        fig.add_trace(go.Scatter(x=frame.loc[infeasible, column], y=[0 if pd.isna(floor) else floor] * infeasible.sum(),
                                 mode="markers", marker={"symbol": "x", "size": 10, "color": "grey"},
                                 text=frame.loc[infeasible, "id"], name="infeasible (over budget, not trained)"))
    return fig.update_layout(xaxis_title=axis, yaxis_title=metric)


def speed_vs_accuracy(speed: pd.DataFrame, metric: str) -> go.Figure:
    return cost_vs_accuracy(speed, metric, "latency_ms", "p50 latency", "p50 latency (ms)")


def latency_bars(speed: pd.DataFrame) -> go.Figure:
    """p50 latency per model (trial), one bar per backend@target."""
    frame = speed.assign(label=speed["model"] + " (" + speed["id"] + ")")
    fig = px.bar(frame, x="label", y="latency_ms", color="where", barmode="group",
                 title=f"p50 latency per model, {' '.join(sorted(set(frame['where'])))}")
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
