"use strict";
// The service's pages run this file only: the Content-Security-Policy forbids inline script. Every string from the
// server lands as text (textContent, plotly's own escaping), never as markup; figures arrive as JSON data blocks.

function drawFigures(root) {
  root.querySelectorAll('script.figure[type="application/json"]').forEach((block) => {
    const fig = JSON.parse(block.textContent);
    const div = document.createElement("div");
    div.className = "chart";
    block.after(div);
    Plotly.newPlot(div, fig.data, fig.layout);
  });
}

function element(tag, text) {
  const el = document.createElement(tag);
  el.textContent = text;
  return el;
}

function comparisonTable(table, sweep) {
  const out = document.createElement("table");
  out.id = "comparison";
  const head = out.createTHead().insertRow();
  table.columns.forEach((name) => head.appendChild(element("th", name)));
  const body = out.createTBody();
  const trial = table.columns.indexOf("trial");
  table.rows.forEach((values) => {
    const row = body.insertRow();
    values.forEach((value, i) => {
      const cell = row.insertCell();
      if (i === trial) {
        const link = element("a", value);
        link.href = "/sweeps/" + encodeURIComponent(sweep) + "/trials/" + encodeURIComponent(value);
        cell.appendChild(link);
      } else {
        cell.textContent = value;
      }
    });
  });
  return out;
}

// the live page: each server-sent event (a state or progress change) redraws the table and the charts
function followSweep(main) {
  const sweep = main.dataset.sweep;
  async function redraw() {
    const f = await (await fetch("/sweeps/" + encodeURIComponent(sweep) + "/fragment")).json();
    document.getElementById("state").textContent = f.state;
    document.getElementById("progress").textContent = f.progress + (f.error ? " · " + f.error : "");
    document.getElementById("table").replaceChildren(...(f.table ? [comparisonTable(f.table, sweep)] : []));
    const charts = document.getElementById("charts");
    f.figures.forEach((fig, i) => {
      let div = document.getElementById("chart" + i);
      if (!div) {
        div = document.createElement("div");
        div.id = "chart" + i;
        div.className = "chart";
        charts.appendChild(div);
      }
      Plotly.react(div, fig.data, fig.layout);
    });
  }
  redraw();
  const events = new EventSource("/api/sweeps/" + encodeURIComponent(sweep) + "/events");
  events.onmessage = () => redraw();
  events.onerror = () => events.close();
}

document.addEventListener("DOMContentLoaded", () => {
  drawFigures(document);
  const live = document.getElementById("live");
  if (live) followSweep(live);
});
