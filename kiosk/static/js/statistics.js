/* Statistics charts with the vendored Chart.js; the data comes from data-charts (JSON). */
(function () {
  "use strict";
  var box = document.getElementById("charts");
  if (!box || !window.Chart) { return; }
  var data = JSON.parse(box.dataset.charts);
  var brand = "#8c1f55", grey = "#9a8f89";
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 14;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;          // a Pi's CPU has better things to do

  function bar(canvas, labels, values, label, opts) {
    if (!canvas) { return; }
    return new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: [{ label: label, data: values, backgroundColor: brand }] },
      options: Object.assign({ plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }, opts || {})
    });
  }
  bar(document.getElementById("chart-analysis"), data.analyses.map(function (a) { return a.name; }),
      data.analyses.map(function (a) { return a.exams; }), data.labels.count);
  bar(document.getElementById("chart-month"), data.months.map(function (m) { return m.month; }),
      data.months.map(function (m) { return m.count; }), data.labels.count);
  document.querySelectorAll("canvas.chart-classes").forEach(function (canvas) {
    var a = data.analyses.filter(function (x) { return x.id === canvas.dataset.analysis; })[0];
    if (!a) { return; }
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: a.classes.map(function (c) { return c.name; }),
        datasets: [{ label: data.labels.prevalence, data: a.classes.map(function (c) { return +(c.prevalence * 100).toFixed(1); }),
                     backgroundColor: a.classes.map(function (c, i) { return i % 2 ? grey : brand; }) }]
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, max: 100 } } }
    });
  });
  if (data.posts) {
    bar(document.getElementById("chart-posts"), data.posts.map(function (p) { return p.post; }),
        data.posts.map(function (p) { return p.count; }), data.labels.count);
  }
})();
