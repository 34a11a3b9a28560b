"""Compare runs: loss curves overlaid, what differs in their settings, final validation MSE and time."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from aelib import checkpoints
from aelib.train import History
from aelib.ui import draw, router

fr = router.page(__file__)
st.caption("Any of this session's runs and the server's models, side by side.")
models = [m for m in fr.all_models if (m.meta or {}).get("history", {}).get("epoch")]
if not models:
    st.info("No model with a recorded training history yet: train one on the Training page.")
    st.stop()
by_id = {m.id: m for m in models}
# This session's latest runs; fewer than two are topped up with the sidebar's picks, so there is
# something to compare.
default = [m.id for m in models if m.origin == "session"][-4:]
if len(default) < 2:
    default += [m.id for m in fr.models if m.id in by_id and m.id not in default][: 4 - len(default)]
picked = [
    by_id[i]
    for i in st.multiselect(
        "Models", list(by_id), default=default, key="aelib.c_models", format_func=lambda i: by_id[i].label
    )
]
if not picked:
    st.info("Pick two or more models to compare.")
    st.stop()

fig = go.Figure()
rows = []
for m in picked:
    h = History.from_dict(m.meta["history"])
    val = [v for v in h.val_mse if not math.isnan(v)]
    fig.add_scatter(
        x=h.epoch,
        y=h.val_mse if val else h.train_loss,
        mode="lines+markers",
        name=m.name + ("" if val else " (train loss)"),
    )
    data = m.meta.get("dataset") or {}
    rows.append(
        {
            "model": m.name,
            # Runs on different data share one axis: say which data each curve is on
            "data": str(data.get("name", "")) + (
                f", normal {list(data['normal_classes'])}" if data.get("normal_classes") else ""
            ),
            "epochs": len(h.epoch),
            "final val MSE": val[-1] if val else None,
            "best val MSE": min(val) if val else None,
            "seconds": round(h.seconds[-1], 1) if h.seconds else None,  # cumulative: the last is the total
            "about": checkpoints.describe(m.meta),
        }
    )
draw.epoch_axis(fig, max(r["epochs"] for r in rows))
st.plotly_chart(draw.chart_layout(fig, "epoch", "validation MSE", 380, log="y"), key="aelib.c_chart")
draw.table(rows, five_digits=("final val MSE", "best val MSE"))

st.subheader("What differs")
diff = checkpoints.differences([m.meta for m in picked])
if len(picked) < 2:
    st.caption("Pick a second model to see what differs.")
elif not diff:
    st.caption("Their model and training settings are the same; only their data may differ.")
else:
    st.dataframe(
        pd.DataFrame(
            {m.name: [str(v[j]) for v in diff.values()] for j, m in enumerate(picked)}, index=list(diff)
        )
    )
