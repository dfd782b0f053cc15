// loraft dashboard: renders each page from the JSON under /api/. No
// framework and nothing from another origin; uPlot is vendored.
"use strict";
(function () {
  var body = document.body;
  var page = body.dataset.page, name = body.dataset.name, canWrite = body.dataset.write === "true";
  var app = document.getElementById("app");

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(v, digits) { return v == null ? "—" : Number(v).toFixed(digits == null ? 4 : digits); }
  function dur(ms) {
    if (ms == null) return "—";
    var s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  function when(ms) { return ms ? new Date(ms).toLocaleString() : "—"; }
  function clock(ms) { return ms ? new Date(ms).toLocaleTimeString() : "earlier"; }
  function badge(state) { return '<span class="state s-' + esc(state) + '">' + esc(state.toLowerCase().replace("_", " ")) + "</span>"; }
  function link(kind, n) { return '<a href="/' + kind + "/" + encodeURIComponent(n) + '">' + esc(n) + "</a>"; }
  function color(i, n) { return "hsl(" + Math.round((i * 137.508) % 360) + ", 65%, 50%)"; }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
        if (!r.ok) throw new Error(b.error || r.status + " " + r.statusText);
        return b;
      });
    });
  }
  // act posts an operator's action; the custom header is the dashboard's
  // CSRF proof (a cross-site form cannot set it).
  function act(url, what) {
    return fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-Loraft-Action": "1" } }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (!r.ok) throw new Error(b.error || r.status + " " + r.statusText);
        return what + ": done";
      });
    });
  }
  function note(msg, bad) {
    var el = document.getElementById("note");
    if (el) { el.textContent = msg; el.className = "toast " + (bad ? "problem" : "muted"); }
  }
  function onAction(e) {
    var b = e.target.closest("button[data-post]");
    if (!b) return;
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    act(b.dataset.post, b.dataset.what).then(function (m) { note(m, false); }, function (err) { note(err.message, true); })
      .then(function () { b.disabled = false; refresh(); });
  }
  app.addEventListener("click", onAction);

  // poll re-renders from url every ms while the tab is visible.
  var refresh = function () {};
  function poll(url, render, ms) {
    function load() {
      return getJSON(url).then(render, function (err) {
        app.innerHTML = '<p class="problem">' + esc(err.message) + "</p>";
      });
    }
    refresh = load;
    load();
    setInterval(function () { if (!document.hidden) load(); }, ms);
  }

  // ---- charts -------------------------------------------------------
  var chart = null, chartKey = "";
  // curvesData aligns every trial's loss and metric points on one step axis.
  function curvesData(curves) {
    var tables = [], series = [{ label: "step" }], key = [];
    curves.forEach(function (c, i) {
      var col = color(i);
      if (c.loss.length) {
        tables.push([c.loss.map(function (p) { return p.step; }), c.loss.map(function (p) { return p.value; })]);
        series.push({ label: c.trial + " loss", scale: "loss", stroke: col, width: 1.5, spanGaps: true });
        key.push(c.trial + ":l");
      }
      if (c.metric.length) {
        tables.push([c.metric.map(function (p) { return p.step; }), c.metric.map(function (p) { return p.value; })]);
        series.push({ label: c.trial + " metric", scale: "metric", stroke: col, width: 2, dash: [6, 4], spanGaps: true,
          points: { show: true, size: 5 } });
        key.push(c.trial + ":m");
      }
    });
    if (!tables.length) return null;
    return { data: window.uPlot.join(tables), series: series, key: key.join(",") };
  }
  function tooltipPlugin(tip) {
    var focused = null;
    return {
      hooks: {
        setSeries: function (u, sidx, opts) { if (opts && opts.focus != null) focused = opts.focus ? sidx : null; },
        setCursor: function (u) {
          var i = u.cursor.idx;
          if (i == null) { tip.textContent = "Hover the chart for values."; return; }
          var rows = [];
          for (var s = 1; s < u.series.length; s++) {
            var v = u.data[s][i];
            if (v != null && u.series[s].show) rows.push([u.series[s].label, v, s === focused]);
          }
          rows.sort(function (a, b) { return (b[2] - a[2]) || (b[1] - a[1]); });
          tip.innerHTML = "step <b>" + esc(u.data[0][i]) + "</b>" + rows.slice(0, 8).map(function (r) {
            return " · " + (r[2] ? "<b>" : "") + esc(r[0]) + " " + num(r[1]) + (r[2] ? "</b>" : "");
          }).join("") + (rows.length > 8 ? " · +" + (rows.length - 8) + " more" : "");
        }
      }
    };
  }
  function drawCurves(el, curves, metric) {
    if (!window.uPlot || !el) return;
    var d = curvesData(curves);
    if (!d) { el.innerHTML = '<p class="muted">No loss or ' + esc(metric) + " points yet.</p>"; chart = null; chartKey = ""; return; }
    if (chart && chartKey === d.key && chart.root.isConnected) { chart.setData(d.data); return; }
    if (chart) chart.destroy();
    el.innerHTML = "";
    var tip = document.createElement("p");
    tip.className = "muted mono";
    tip.textContent = "Hover the chart for values.";
    var width = Math.max(280, el.clientWidth - 4);
    chart = new window.uPlot({
      width: width, height: width < 500 ? 240 : 320,
      legend: { show: false },
      cursor: { focus: { prox: 24 } },
      focus: { alpha: 0.25 },
      plugins: [tooltipPlugin(tip)],
      scales: { x: { time: false } },
      axes: [
        { label: "step", stroke: getComputedStyle(body).color },
        { scale: "loss", label: "loss", stroke: getComputedStyle(body).color },
        { scale: "metric", label: "val " + metric, side: 1, grid: { show: false }, stroke: getComputedStyle(body).color }
      ],
      series: d.series
    }, d.data, el);
    chartKey = d.key;
    el.appendChild(tip);
  }
  window.addEventListener("resize", function () {
    if (chart) { var el = chart.root.parentNode; chart.setSize({ width: Math.max(280, el.clientWidth - 4), height: chart.height }); }
  });

  // ---- pages --------------------------------------------------------
  function sweepsPage() {
    poll("/api/sweeps", function (v) {
      if (!v.sweeps.length) { app.innerHTML = '<p class="muted">No sweeps yet. Launch one with <code>loraft sweep launch</code>.</p>'; return; }
      app.innerHTML = '<div class="panel scroll"><table><thead><tr><th>sweep</th><th class="num">trials</th><th>states</th>' +
        '<th class="num">best metric</th><th class="hide-s">best trial</th><th class="hide-s">created</th></tr></thead><tbody>' +
        v.sweeps.map(function (s) {
          return "<tr><td>" + link("sweeps", s.name) + (s.cancelled ? ' <span class="muted">(cancelled)</span>' : "") + "</td>" +
            '<td class="num">' + s.trials + "</td><td>" + counts(s.states) + "</td>" +
            '<td class="num">' + num(s.best) + ' <span class="muted">' + esc(s.metric) + "</span></td>" +
            '<td class="hide-s">' + (s.best_trial ? link("trials", s.best_trial) : "—") + '</td><td class="hide-s">' + when(s.created_unix_ms) + "</td></tr>";
        }).join("") + "</tbody></table></div>";
    }, 2000);
  }
  function counts(states) {
    return '<span class="counts">' + Object.keys(states).sort().map(function (k) {
      return badge(k) + " " + states[k];
    }).join(" ") + "</span>";
  }

  function trialsTable(v) {
    var best = null;
    v.trials.forEach(function (t) { if (t.best != null && (best == null || t.best > best.best)) best = t; });
    return '<table><thead><tr><th>trial</th><th class="num">rank</th><th class="num">alpha</th><th>state</th><th>step / total</th>' +
      '<th class="num">loss</th><th class="num">best ' + esc(v.metric) + '</th><th class="num">ETA</th><th class="num">attempts</th>' +
      "<th>trainer</th><th>reason</th>" + (canWrite ? "<th></th>" : "") + "</tr></thead><tbody>" +
      v.trials.map(function (t) {
        var frac = t.step != null && t.steps ? Math.min(1, t.step / t.steps) : 0;
        var resumable = t.state === "FAILED" || t.state === "CANCELLED" || t.state === "STOPPED_EARLY";
        return "<tr" + (best === t ? ' class="best"' : "") + ' id="t-' + esc(t.name) + '" data-state="' + esc(t.state) + '" data-step="' + (t.step == null ? "" : t.step) + '"><td>' + link("trials", t.name) + "</td>" +
          '<td class="num">' + t.rank + '</td><td class="num">' + t.alpha + "</td><td>" + badge(t.state) + "</td>" +
          '<td class="mono"><span class="bar"><i style="width:' + (frac * 100).toFixed(1) + '%"></i></span>' +
          (t.step == null ? "—" : t.step) + " / " + (t.steps == null ? "—" : t.steps) + "</td>" +
          '<td class="num">' + num(t.loss) + '</td><td class="num">' + num(t.best) + '</td><td class="num">' + (t.state === "RUNNING" ? dur(t.eta_ms) : "—") + "</td>" +
          '<td class="num">' + t.attempts + "</td><td>" + esc(t.trainers.join(", ")) + '</td><td class="reason">' + esc(t.reason) +
          (t.warning ? ' <span class="problem">' + esc(t.warning) + "</span>" : "") + "</td>" +
          (canWrite ? "<td>" + (resumable ? '<button data-post="/api/trials/' + encodeURIComponent(t.name) + '/resume" data-what="resume ' + esc(t.name) + '">Resume</button>' : "") + "</td>" : "") +
          "</tr>";
      }).join("") + "</tbody></table>";
  }
  function heatTable(h, metric) {
    if (!h.ranks.length) return '<p class="muted">No trials.</p>';
    var lo = h.min, hi = h.max;
    function shade(v) {
      if (v == null) return ' class="none">—';
      var f = hi > lo ? (v - lo) / (hi - lo) : 1;
      return ' style="background:hsl(' + Math.round(10 + 110 * f) + ',70%,' + Math.round(72 - 14 * f) + '%)" title="' + esc(metric) + " " + num(v) + '">' + num(v, 3);
    }
    return '<table class="heat"><thead><tr><th>rank \\ alpha</th>' + h.alphas.map(function (a) { return "<th>" + a + "</th>"; }).join("") +
      "</tr></thead><tbody>" + h.ranks.map(function (r, i) {
        return "<tr><th>" + r + "</th>" + h.cells[i].map(function (c) { return "<td" + shade(c) + "</td>"; }).join("") + "</tr>";
      }).join("") + "</tbody></table>";
  }
  function eventsList(events) {
    if (!events.length) return '<p class="muted">No early stops, requeues or failures.</p>';
    return '<ul class="events">' + events.map(function (e) {
      return '<li><span class="muted">' + clock(e.unix_ms) + '</span> <span class="kind">' + esc(e.kind) + "</span> " +
        link("trials", e.trial) + (e.text ? ' <span class="muted">' + esc(e.text) + "</span>" : "") + "</li>";
    }).join("") + "</ul>";
  }

  function sweepPage() {
    app.innerHTML = '<div class="actions"><span id="states"></span><span class="live" id="live">connecting…</span>' +
      (canWrite ? '<button class="danger" id="cancel" data-post="/api/sweeps/' + encodeURIComponent(name) + '/cancel" data-what="cancel ' + esc(name) +
        '" data-confirm="Cancel every pending and running trial of ' + esc(name) + '?">Cancel sweep</button>' : "") +
      '<span id="note" class="toast"></span></div>' +
      '<div class="grid2"><section class="panel"><h2>Loss (solid) and validation metric (dashed)</h2><div class="chart" id="chart"></div></section>' +
      '<section class="panel"><h2>Rank × alpha: best metric</h2><div class="scroll" id="heat"></div><h2>Early stops and requeues</h2><div id="events"></div></section></div>' +
      '<h2>Trials</h2><div class="panel scroll" id="trials"></div>';
    var parts = { states: document.getElementById("states"), trials: document.getElementById("trials"), heat: document.getElementById("heat"),
      events: document.getElementById("events"), chart: document.getElementById("chart"), live: document.getElementById("live"),
      cancel: document.getElementById("cancel") };
    var metric = "macro_f1";
    function render(v) {
      parts.states.innerHTML = counts(v.states) + (v.cancelled ? ' <span class="muted">cancelled</span>' : "") +
        (v.early_stopping ? ' <span class="muted">early stopping: ' + esc(v.early_stopping) + "</span>" : "") +
        (v.live ? "" : ' <span class="problem" id="stale">stale: no leader answered, so this is this coordinator\'s applied state without live progress</span>');
      parts.trials.innerHTML = trialsTable(v);
      parts.heat.innerHTML = heatTable(v.heat, v.metric);
      parts.events.innerHTML = eventsList(v.events);
      if (parts.cancel) parts.cancel.disabled = v.cancelled || !((v.states.PENDING || 0) + (v.states.RUNNING || 0));
      metric = v.metric;
      if (v.curves) drawCurves(parts.chart, v.curves, v.metric);
      body.dataset.updated = String(Date.now());
    }
    var url = "/api/sweeps/" + encodeURIComponent(name);
    refresh = function () { return getJSON(url).then(render, function (e) { note(e.message, true); }); };
    refresh();
    // Live updates: the server pushes the whole view when it changes.
    var es = new EventSource(url + "/events");
    es.onmessage = function (m) {
      parts.live.className = "live on";
      parts.live.textContent = "live";
      render(JSON.parse(m.data));
    };
    // Curves come apart, at most every few seconds: they are most of the bytes.
    es.addEventListener("curves", function (m) { drawCurves(parts.chart, JSON.parse(m.data), metric); });
    es.addEventListener("problem", function (m) { note(JSON.parse(m.data).error, true); });
    es.onerror = function () {
      parts.live.className = "live off";
      parts.live.textContent = "reconnecting…";
      if (es.readyState === EventSource.CLOSED) {
        // Refused (too many streams, signed out): poll instead.
        parts.live.textContent = "polling";
        setInterval(function () { if (!document.hidden) refresh(); }, 2000);
      }
    };
  }

  function trialPage() {
    app.innerHTML = '<div class="actions" id="acts"></div><div class="grid2"><section class="panel"><h2>Curves</h2><div class="chart" id="chart"></div></section>' +
      '<section class="panel"><h2>Trial</h2><dl class="kv" id="kv"></dl></section></div>' +
      '<h2>Copy the adapter</h2><pre class="cmd" id="pull"></pre><button id="copy" type="button">Copy command</button>' +
      '<div class="grid2"><section><h2>Checkpoints</h2><div class="panel scroll" id="ckpts"></div></section>' +
      '<section><h2>Events</h2><div class="panel" id="events"></div></section></div>';
    document.getElementById("copy").addEventListener("click", function () {
      var text = document.getElementById("pull").textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text).then(function () { note("copied", false); }, function () { note("select the command and copy it", true); });
    });
    poll("/api/trials/" + encodeURIComponent(name), function (v) {
      var t = v.trial, resumable = t.state === "FAILED" || t.state === "CANCELLED" || t.state === "STOPPED_EARLY";
      document.getElementById("acts").innerHTML = badge(t.state) + " in sweep " + link("sweeps", v.sweep) +
        (canWrite && resumable ? ' <button data-post="/api/trials/' + encodeURIComponent(t.name) + '/resume" data-what="resume ' + esc(t.name) + '">Resume run</button>' : "") +
        ' <span id="note" class="toast"></span>';
      var kv = [["rank", t.rank], ["alpha", t.alpha], ["learning rate", t.learning_rate], ["step", (t.step == null ? "—" : t.step) + " / " + (t.steps == null ? "—" : t.steps)],
        ["loss", num(t.loss)], ["best " + v.metric, num(t.best)], ["ETA", t.state === "RUNNING" ? dur(t.eta_ms) : "—"], ["attempts", t.attempts],
        ["generation", t.generation], ["trainers", t.trainers.join(", ") || "—"], ["started", when(v.started_unix_ms)], ["finished", when(v.finished_unix_ms)],
        ["run time", dur(v.running_ms + (t.state === "RUNNING" && v.started_unix_ms ? Date.now() - v.started_unix_ms : 0))], ["reason", t.reason || "—"]];
      if (v.result) kv.push(["test macro-F1", num(v.result.test_macro_f1)], ["val accuracy", num(v.result.val_accuracy)], ["val ECE", num(v.result.val_ece)]);
      document.getElementById("kv").innerHTML = kv.map(function (p) { return "<dt>" + esc(p[0]) + "</dt><dd>" + esc(p[1]) + "</dd>"; }).join("");
      document.getElementById("pull").textContent = v.pull;
      document.getElementById("ckpts").innerHTML = v.checkpoints.length ? "<table><thead><tr><th class=\"num\">step</th><th class=\"num\">" + esc(v.metric) +
        "</th><th>committed</th><th class=\"num\">size</th></tr></thead><tbody>" + v.checkpoints.map(function (c) {
          return '<tr><td class="num">' + c.step + '</td><td class="num">' + num(c.metric) + "</td><td>" + (c.committed ? "yes" : "no") +
            (c.latest ? ' <span class="muted">(resume point)</span>' : "") + '</td><td class="num muted" title="in the store">' + (c.size == null ? "—" : c.size) + "</td></tr>";
        }).join("") + "</tbody></table>" : '<p class="muted">No committed checkpoint yet.</p>';
      document.getElementById("events").innerHTML = eventsList(v.events);
      drawCurves(document.getElementById("chart"), [v.curve], v.metric);
    }, 1500);
  }

  function trainersPage() {
    poll("/api/trainers", function (v) {
      app.innerHTML = (v.live ? "" : '<p class="problem" id="stale">Stale: no leader answered, and lease ages are known only to the leader.</p>') +
        (!v.trainers.length ? '<p class="muted">No trainer has registered.</p>' :
        '<div class="panel scroll"><table><thead><tr><th>trainer</th><th>address</th><th>device</th><th class="num">lease age</th>' +
        '<th>current trial</th><th class="num">samples/s</th></tr></thead><tbody>' + v.trainers.map(function (t) {
          var late = t.lease_age_ms != null && t.lease_ms && t.lease_age_ms > t.lease_ms;
          return "<tr><td>" + esc(t.id) + '</td><td class="mono">' + esc(t.address) + "</td><td>" + esc(t.device || "—") + '</td><td class="num' +
            (late ? " problem" : "") + '">' + (t.lease_age_ms == null ? "—" : (t.lease_age_ms / 1000).toFixed(1) + " s") + "</td><td>" +
            (t.trial ? link("trials", t.trial) + ' <span class="muted">rank ' + t.rank + "</span>" : '<span class="muted">idle</span>') +
            '</td><td class="num">' + num(t.samples_per_s, 1) + "</td></tr>";
        }).join("") + "</tbody></table></div>");
    }, 2000);
  }

  function raftPage() {
    poll("/api/raft", function (v) {
      app.innerHTML = '<div class="panel"><dl class="kv"><dt>this node</dt><dd>' + esc(v.id) + " (" + esc(v.state) + ")</dd><dt>leader</dt><dd>" +
        esc(v.leader_id || "none known") + ' <span class="muted mono">' + esc(v.leader_addr) + "</span></dd><dt>term</dt><dd>" + v.term +
        "</dd><dt>commit index</dt><dd>" + v.commit_index + "</dd><dt>applied index</dt><dd>" + v.applied_index + "</dd><dt>last log index</dt><dd>" +
        v.last_log_index + "</dd><dt>last contact</dt><dd>" + (v.last_contact_ms == null ? "never" : v.state === "Leader" ? "— (leader)" : v.last_contact_ms + " ms ago") +
        '</dd></dl></div><h2>Members</h2><div class="panel scroll"><table><thead><tr><th>id</th><th>raft address</th><th>API address</th><th>suffrage</th><th></th></tr></thead><tbody>' +
        v.members.map(function (m) {
          return "<tr><td>" + esc(m.id) + '</td><td class="mono">' + esc(m.raft_addr) + '</td><td class="mono">' + esc(m.api_addr || "—") + "</td><td>" +
            esc(m.suffrage) + "</td><td>" + (m.leader ? "<b>leader</b> " : "") + (m.self ? '<span class="muted">this node</span>' : "") + "</td></tr>";
        }).join("") + "</tbody></table></div>";
    }, 2000);
  }

  ({ sweeps: sweepsPage, sweep: sweepPage, trial: trialPage, trainers: trainersPage, raft: raftPage }[page] || function () {})();
})();
