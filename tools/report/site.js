// Report site behaviour: code folding toggle, plotly figures drawn from inline JSON with the local plotly.js.
(function () {
  window.__reportErrors = [];
  window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message)); });
  function setCode(open) {
    document.querySelectorAll('details.code').forEach(function (d) { d.open = open; });
    var b = document.getElementById('toggle-code'); if (b) b.textContent = open ? 'Hide code' : 'Show code';
    try { localStorage.setItem('report-code-open', open ? '1' : '0'); } catch (e) {}
  }
  function drawFigures() {
    var specs = document.querySelectorAll('script.plotly-data');
    if (!specs.length) return;
    if (!window.Plotly) { window.__reportErrors.push('plotly.js did not load'); return; }
    specs.forEach(function (s) {
      var el = document.getElementById(s.dataset.target);
      try {
        var spec = JSON.parse(s.textContent);
        Plotly.newPlot(el, spec.data || [], spec.layout || {}, Object.assign({responsive: true, displaylogo: false}, spec.config || {}));
      } catch (e) { window.__reportErrors.push('plotly: ' + e); }
    });
  }
  document.addEventListener('DOMContentLoaded', function () {
    var b = document.getElementById('toggle-code');
    var open = false; try { open = localStorage.getItem('report-code-open') === '1'; } catch (e) {}
    setCode(open);
    if (b) b.addEventListener('click', function () { setCode(b.textContent === 'Show code'); });
    drawFigures();
  });
})();
