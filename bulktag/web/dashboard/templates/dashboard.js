// bulktag dashboard: polls the JSON API and updates the page without a reload; posts actions
// with the token (asked once, kept in sessionStorage for this tab). Every value is written
// with textContent or setAttribute, never as HTML: what the API returns stays text.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  var jobId = body.dataset.job;
  var poll = Number(body.dataset.poll) || 2000;
  var SVG = "http://www.w3.org/2000/svg";
  var TOKEN_KEY = "bulktag.ui_token";

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function num(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }
  function dur(s) {
    if (s === null || s === undefined) { return "-"; }
    s = Math.floor(s);
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s"; }
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  function clock(ts) {
    if (!ts) { return "-"; }
    var d = new Date(ts * 1000);
    function p(n) { return String(n).padStart(2, "0"); }
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function bar(progress) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "bar");
    svg.setAttribute("viewBox", "0 0 100 10");
    svg.setAttribute("preserveAspectRatio", "none");
    progress.forEach(function (p) {
      var r = document.createElementNS(SVG, "rect");
      r.setAttribute("class", "seg-" + p.name);
      r.setAttribute("x", p.x); r.setAttribute("y", 0);
      r.setAttribute("width", p.width); r.setAttribute("height", 10);
      var t = document.createElementNS(SVG, "title");
      t.textContent = p.name + ": " + p.count;
      r.appendChild(t);
      svg.appendChild(r);
    });
    return svg;
  }
  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (c) {
      var td = el("td", null, c.cls);
      if (c.node) { td.appendChild(c.node); } else { td.textContent = c.text === null || c.text === undefined ? "" : String(c.text); }
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(tableId, rows, empty, columns) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    var fresh = document.createElement("tbody");
    if (!rows.length) { var td = el("td", empty, "muted"); td.colSpan = columns; var tr = el("tr"); tr.appendChild(td); fresh.appendChild(tr); }
    rows.forEach(function (r) { fresh.appendChild(r); });
    tbody.replaceWith(fresh);
  }
  function state(text) { return el("span", text, "state state-" + text); }
  function link(href, text) { var a = el("a", text); a.href = href; return a; }
  function getJSON(url) {
    return fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(url + ": HTTP " + r.status); } return r.json(); });
  }
  function updated(ok) {
    var u = document.getElementById("updated");
    u.textContent = ok ? "updated " + new Date().toLocaleTimeString() : "update failed: daemon unreachable?";
  }

  // -- the jobs page --------------------------------------------------------------------------
  function refreshIndex() {
    return Promise.all([getJSON("/api/jobs"), getJSON("/api/workers"), getJSON("/api/sync-rules")])
      .then(function (all) {
        fill("jobs", all[0].jobs.map(function (j) {
          var open = j.counts.pending + j.counts.leased;
          var tr = row([
            { node: link("/jobs/" + j.job, j.job), cls: "num" }, { text: j.name || "" },
            { text: j.operation }, { node: state(j.state) }, { node: bar(j.progress) },
            { text: num(j.total - open) + " / " + num(j.total), cls: "num" },
            { text: j.rate, cls: "num" }, { text: dur(j.eta_seconds), cls: "num" },
            { text: num(j.failures), cls: "num" }, { text: j.priority, cls: "num" }]);
          tr.dataset.job = j.job;
          return tr;
        }), "no jobs yet", 10);
        fill("workers", all[1].workers.map(function (w) {
          return row([{ text: w.owner, cls: "arn" }, { text: w.host }, { text: w.pid, cls: "num" },
            { text: clock(w.started_at) }, { text: w.heartbeat_age_seconds + " s ago", cls: w.alive ? "num" : "num stale" },
            { text: w.shards, cls: "num" }]);
        }), "no worker holds the store", 6);
        fill("rules", all[2].sync_rules.map(function (r) {
          var match = r.tag_key !== null ? r.tag_key + "=" + (r.tag_value === null ? "" : r.tag_value) : r.resource_query;
          var applies = Object.keys(r.apply).map(function (k) { return k + "=" + r.apply[k]; }).join(", ");
          return row([{ text: r.name }, { node: state(r.status) }, { text: match }, { text: applies },
            { text: num(r.members), cls: "num" }, { text: clock(r.last_run_at) }, { text: r.error || "", cls: "msg" }]);
        }), "no sync rules", 7);
      });
  }

  // -- a job's page ---------------------------------------------------------------------------
  var chartTick = 0;
  function refreshJob() {
    return getJSON("/api/jobs/" + jobId).then(function (j) {
      var s = document.getElementById("state");
      s.textContent = j.state; s.className = "state state-" + j.state;
      document.getElementById("priority").textContent = j.priority;
      document.getElementById("reason").textContent = j.reason ? " · " + j.reason : "";
      var set = function (id, v) { document.getElementById(id).textContent = v; };
      set("c-total", num(j.total)); set("c-succeeded", num(j.counts.succeeded));
      set("c-skipped", num(j.counts.skipped)); set("c-failed", num(j.failures));
      set("c-open", num(j.counts.pending + j.counts.leased)); set("c-rate", j.rate);
      set("c-eta", dur(j.eta_seconds)); set("c-elapsed", dur(j.elapsed_seconds));
      var idle = document.getElementById("no-worker");
      if (idle) idle.hidden = !(j.state === "active" && !j.workers);
      set("samples", j.samples + " sample(s), taken by the daemon every " + j.sample_seconds +
        " s; ARNs/s between samples (per minute from ten minutes on).");
      var p = document.getElementById("progress");
      p.replaceChildren(bar(j.progress));
      document.querySelectorAll("button[data-action]").forEach(function (b) {
        var why = j.actions[b.dataset.action];  // null: the action applies now
        b.disabled = !!why;
        if (why) { b.title = why; } else { b.removeAttribute("title"); }
        if (b.dataset.action === "priority") { document.getElementById("priority-input").disabled = !!why; }
      });
      fill("shards", j.shards.map(function (r) {
        var of = r.rate !== null && r.quota ? Math.round(100 * r.rate / r.quota) + "% of " + r.quota : "-";
        return row([{ text: r.account === null ? "(invalid input)" : r.account }, { text: r.region || "" },
          { text: num(r.done), cls: "num" }, { text: num(r.skipped), cls: "num" }, { text: num(r.failed), cls: "num" },
          { text: num(r.cancelled), cls: "num" }, { text: num(r.open), cls: "num" },
          { text: r.rate === null ? "-" : r.rate, cls: "num" }, { text: of, cls: "num" },
          { text: r.throttles === null ? "-" : r.throttles, cls: "num" }]);
      }), "no items", 10);
      fill("errors", j.top_errors.map(function (e) {
        return row([{ text: e.code }, { text: num(e.count), cls: "num" }, { text: e.example_arn || "", cls: "arn" },
          { text: e.example_message || "", cls: "msg" }, { text: e.advice }]);
      }), "no errors", 5);
      fill("failures", j.last_failures.map(function (f) {
        return row([{ text: clock(f.finished_at) }, { text: f.arn, cls: "arn" }, { text: f.error_code || "" },
          { text: f.http_status || "", cls: "num" }, { text: f.attempts, cls: "num" }, { text: f.message || "", cls: "msg" }]);
      }), "no failures", 6);
      chartTick += 1;
      if (chartTick % 3 === 0 || j.state === "completed") { return refreshChart(); }
    });
  }
  function refreshChart() {
    return fetch("/jobs/" + jobId + "/chart.svg", { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("chart: HTTP " + r.status); } return r.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "image/svg+xml");
        var svg = doc.documentElement;
        if (svg.namespaceURI !== SVG || svg.localName !== "svg") { return; }
        svg.querySelectorAll("script, foreignObject").forEach(function (n) { n.remove(); });
        document.getElementById("chart").replaceChildren(document.importNode(svg, true));
      });
  }

  // -- actions --------------------------------------------------------------------------------
  function say(text, ok) {
    var s = document.getElementById("action-status");
    s.textContent = text; s.className = ok ? "ok" : "error";
  }
  function act(action) {
    var headers = { "Content-Type": "application/json" };
    if (body.dataset.actions === "on") {
      var token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) {
        token = window.prompt("Dashboard token (ui_token) to " + action + " job " + jobId);
        if (token) { sessionStorage.setItem(TOKEN_KEY, token); }
      }
      if (token) { headers["Authorization"] = "Bearer " + token; }
    }
    var payload = {};
    if (action === "priority") { payload.priority = parseInt(document.getElementById("priority-input").value, 10); }
    return fetch("/api/jobs/" + jobId + "/" + action, {
      method: "POST", headers: headers, body: JSON.stringify(payload), cache: "no-store",
      credentials: "omit"
    }).then(function (r) {
      return r.json().then(function (data) {
        if (r.status === 401) { sessionStorage.removeItem(TOKEN_KEY); }
        if (r.ok) { say(data.message, true); } else { say("refused (" + r.status + "): " + data.error, false); }
        return refreshJob();
      });
    }).catch(function (err) { say("failed: " + err.message, false); });
  }
  document.querySelectorAll("button[data-action]").forEach(function (b) {
    b.addEventListener("click", function () { act(b.dataset.action); });
  });

  // -- polling --------------------------------------------------------------------------------
  var refresh = page === "job" ? refreshJob : refreshIndex;
  function loop() {
    refresh().then(function () { updated(true); }, function () { updated(false); })
      .then(function () { window.setTimeout(loop, poll); });
  }
  window.setTimeout(loop, poll);
})();
