// The study dashboard's charts: grades per day of each study, drawn with the vendored Chart.js 4.6.1
// (static/vendor/chartjs/) from <script id="gc-dashboard-data" type="application/json">. A click on a
// day's bar opens that day's grades of the study in the grades list.
(function () {
  "use strict";

  const COLORS = { regular: "#3c8dbc", repeat: "#39cccc", adjudication: "#f39c12", reference: "#605ca8" };

  function shortDay(iso) {
    const [year, month, day] = iso.split("-").map(Number);
    return new Date(year, month - 1, day).toLocaleDateString(undefined, { day: "numeric", month: "short" });
  }

  function dayUrl(base, iso) {
    const [year, month, day] = iso.split("-").map(Number);
    return `${base}&created_at__year=${year}&created_at__month=${month}&created_at__day=${day}`;
  }

  function gradesChart(canvas, days, series) {
    const datasets = series.map(function (kind) {
      return {
        label: kind.label,
        data: kind.counts,
        backgroundColor: COLORS[kind.kind] || "#777777",
        borderRadius: 2,
        stack: "grades",
      };
    });
    if (!datasets.length) datasets.push({ label: "Grades", data: days.map(() => 0), backgroundColor: COLORS.regular });
    return new Chart(canvas, {
      type: "bar",
      data: { labels: days, datasets: datasets },
      options: {
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: {
            stacked: true,
            grid: { display: false },
            ticks: { autoSkip: true, maxRotation: 0, callback: (value) => shortDay(days[value]) },
          },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "grades" } },
        },
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom" },
          tooltip: { callbacks: { title: (items) => shortDay(days[items[0].dataIndex]) } },
        },
        onClick: function (event, elements) {
          if (elements.length) window.location.href = dayUrl(canvas.dataset.gradesUrl, days[elements[0].index]);
        },
        onHover: function (event, elements) {
          canvas.style.cursor = elements.length ? "pointer" : "default";
        },
      },
    });
  }

  function draw() {
    const source = document.getElementById("gc-dashboard-data");
    if (!source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    document.querySelectorAll("canvas.gc-grades-chart").forEach(function (canvas) {
      gradesChart(canvas, data.days, data.studies[canvas.dataset.study] || []);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
