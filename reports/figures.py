"""Plotly figures: each takes a DataFrame and returns a Figure. Tests assert on frames, not pictures."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def metric_by(results: pd.DataFrame, metric: str, key: str, title: str) -> go.Figure:
    """Best ``metric`` of each trial grouped by a config key (box + points)."""
    col, by = f"metric/{metric}", f"config/{key}"
    frame = results.dropna(subset=[col]) if col in results else results.iloc[0:0]
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
