// The agreement page's charts, drawn with the vendored Chart.js 4.6.1 (static/vendor/chartjs/) from the
// figures the page carries in <script id="gc-agreement-data" type="application/json">.
(function () {
  "use strict";

  const COLORS = ["#3c8dbc", "#f39c12", "#00a65a", "#dd4b39", "#605ca8", "#39cccc", "#d81b60", "#777777"];

  // Each value bar gets a whisker from the low to the high end of its 95 % interval.
  const intervalWhiskers = {
    id: "gcIntervalWhiskers",
    afterDatasetsDraw(chart) {
      const intervals = chart.options.plugins.gcIntervalWhiskers.intervals;
      const meta = chart.getDatasetMeta(0);
      const y = chart.scales.y;
      const context = chart.ctx;
      context.save();
      context.strokeStyle = "#212529";
      context.lineWidth = 1.5;
      meta.data.forEach(function (bar, index) {
        const interval = intervals[index];
        if (!interval) return;
        const top = y.getPixelForValue(interval[1]);
        const bottom = y.getPixelForValue(interval[0]);
        const half = Math.min(10, bar.width / 4);
        context.beginPath();
        context.moveTo(bar.x, top);
        context.lineTo(bar.x, bottom);
        context.moveTo(bar.x - half, top);
        context.lineTo(bar.x + half, top);
        context.moveTo(bar.x - half, bottom);
        context.lineTo(bar.x + half, bottom);
        context.stroke();
      });
      context.restore();
    },
  };

  function format(value) {
    return value === null || value === undefined ? "no value" : value.toFixed(3);
  }

  function coefficientsChart(canvas, field) {
    const rows = field.coefficients;
    const lowest = Math.min(0, ...rows.flatMap((row) => (row.interval ? [row.interval[0]] : [])));
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: rows.map((row) => (row.value === null ? [row.name, "(no value)"] : row.name)),
        datasets: [
          {
            label: "value",
            data: rows.map((row) => row.value),
            backgroundColor: rows.map((row, index) => COLORS[index % COLORS.length] + "cc"),
          },
        ],
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { min: Math.floor(lowest * 10) / 10, max: 1, title: { display: true, text: "value" } } },
        plugins: {
          legend: { display: false },
          gcIntervalWhiskers: { intervals: rows.map((row) => row.interval) },
          tooltip: {
            callbacks: {
              label(item) {
                const interval = rows[item.dataIndex].interval;
                const range = interval ? ` (95 % interval ${format(interval[0])} to ${format(interval[1])})` : "";
                return format(rows[item.dataIndex].value) + range;
              },
            },
          },
        },
      },
      plugins: [intervalWhiskers],
    });
  }

  function optionsChart(canvas, field) {
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: field.graders.map((row) => row.grader),
        datasets: field.options.map((option, index) => ({
          label: option,
          data: field.graders.map((row) => row.options[option] || 0),
          backgroundColor: COLORS[index % COLORS.length],
        })),
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        indexAxis: "y",
        scales: {
          x: { stacked: true, title: { display: true, text: "answers" }, ticks: { precision: 0 } },
          y: { stacked: true },
        },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function draw() {
    const source = document.getElementById("gc-agreement-data");
    if (!source || typeof Chart === "undefined") return;
    const fields = JSON.parse(source.textContent).fields;
    document.querySelectorAll("canvas.gc-coefficients-chart").forEach(function (canvas) {
      coefficientsChart(canvas, fields[Number(canvas.dataset.field)]);
    });
    document.querySelectorAll("canvas.gc-options-chart").forEach(function (canvas) {
      optionsChart(canvas, fields[Number(canvas.dataset.field)]);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
