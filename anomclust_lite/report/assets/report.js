/* anomclust_lite report: regroup at any K, map, sort/filter, zoom, name, move, export.
   Reads its data from the JSON block #report-data (a script element of type application/json); writes the DOM with
   textContent/setAttribute only (never innerHTML), so no string from the file system is parsed as HTML. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var PAGE = 48;
  var state = { k: D.k_fit, names: {}, moves: {}, sort: {}, low: {}, shown: {}, heat: !!D.heat, outline: true,
                galleryHeat: false,
                zoomList: [], zoomPos: -1 };
  state.names[D.k_fit] = Object.assign({}, D.names || {});
  var STORE = "anomclust_lite.review." + D.run_id;

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (key) {
      if (key === "text") node.textContent = a[key];
      else if (key === "class") node.className = a[key];
      else if (a[key] !== null && a[key] !== undefined && a[key] !== false) node.setAttribute(key, a[key]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    return Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(3) : String(+x.toPrecision(4));
  }
  function colour(c) {
    if (c === "good") return "#8d949c";  // neutral grey: not a defect type (the palette's greens are clusters)
    if (c === "new") return "#444";
    return D.palette[c % D.palette.length];
  }
  function kIndex() { return state.k - D.k_min; }
  function movesAt() { return state.moves[state.k] || (state.moves[state.k] = {}); }
  function namesAt() { return state.names[state.k] || (state.names[state.k] = {}); }
  function isLow(i) { return D.confidence !== null && D.confidence[i] !== null && D.confidence[i] < D.low_confidence; }

  // Where image i is shown at the current K: a cluster id, "good" or "new". Only an image in no
  // cluster (--good-group auto) is in the good group; with the good group off a likely-good image
  // stays in its cluster, as in clusters.csv.
  function placeOf(i) {
    var moved = movesAt()[i];
    if (moved !== undefined) return moved;
    if (D.is_good && D.is_good[i] && D.cuts[kIndex()][i] < 0) return "good";
    if (D.new_type && D.new_type[i]) return "new";
    return D.cuts[kIndex()][i];
  }
  function members() {
    var out = { good: [], "new": [] };
    for (var c = 0; c < state.k; c++) out[c] = [];
    for (var i = 0; i < D.n; i++) {
      var p = placeOf(i);
      if (out[p]) out[p].push(i);
    }
    return out;
  }
  function clusterName(c) { return namesAt()[c] || ""; }
  function groupTitle(key) {
    if (key === "good") return "Good group";
    if (key === "new") return "Possible new types";
    return "Cluster " + key;
  }

  // ------------------------------------------------------------------ sorting
  var SORTS = [["distance", "distance to centre"], ["confidence", "confidence (lowest first)"],
               ["anomaly", "anomaly score (highest first)"], ["name", "name"]];
  function sortKey(kind, i) {
    if (kind === "distance") return D.dist[kIndex()][i];
    if (kind === "confidence") return D.confidence ? D.confidence[i] : null;
    if (kind === "anomaly") { var a = D.anomaly_score ? D.anomaly_score[i] : D.top_score[i]; return a === null ? null : -a; }
    return null;
  }
  function sorted(list, kind) {
    var out = list.slice();
    if (kind === "name") return out.sort(function (a, b) { return D.paths[a] < D.paths[b] ? -1 : D.paths[a] > D.paths[b] ? 1 : a - b; });
    return out.sort(function (a, b) {
      var x = sortKey(kind, a), y = sortKey(kind, b);
      if (x === null && y === null) return a - b;
      if (x === null) return 1;
      if (y === null) return -1;
      return x - y || a - b;
    });
  }

  // ------------------------------------------------------------------ galleries
  function figure(i, key) {
    var rep = typeof key === "number" && D.reps[kIndex()][key] === i;
    var fig = el("figure", { "class": "thumb" + (rep ? " rep" : ""), tabindex: "0", "data-index": String(i),
                             role: "listitem", "aria-label": D.paths[i] + (rep ? " (representative)" : "") },
      el("img", { src: D.thumbs[i], alt: D.paths[i], "data-path": D.paths[i], loading: "lazy", decoding: "async",
                  width: "160", height: "160" }),
      state.galleryHeat && D.heat && D.heat.maps[i] ? heatOverlay(i) : null,
      rep ? el("span", { "class": "badge", text: "★ representative" }) : null,
      isLow(i) ? el("span", { "class": "badge low", text: "low conf." }) : null,
      el("figcaption", { text: D.paths[i] }));
    return fig;
  }
  function heatOverlay(i) {
    var c = el("canvas", { "class": "heat", width: "64", height: "64", "aria-hidden": "true" });
    var ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heatCanvas(i), 0, 0, 64, 64);
    return c;
  }
  function facts(key, list) {
    var parts = [list.length + (list.length === 1 ? " image" : " images")];
    if (D.labels && list.length) {
      var counts = {};
      list.forEach(function (i) { counts[D.labels[i]] = (counts[D.labels[i]] || 0) + 1; });
      var ranked = Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a] || (a < b ? -1 : 1); });
      parts.push("purity " + (counts[ranked[0]] / list.length).toFixed(3));
      parts.push("labels: " + ranked.map(function (l) { return l + " " + counts[l]; }).join(", "));
    }
    if (typeof key === "number" && state.k === D.k_fit && D.notes && D.notes[key]) parts.push(D.notes[key]);
    return parts.join(" · ");
  }
  function headOf(key, list) {
    var head = el("div", { "class": "cluster-head" }, el("h2", { text: groupTitle(key) }));
    if (typeof key === "number") {
      var input = el("input", { type: "text", "class": "name", placeholder: "name this cluster",
                                "aria-label": "Name of cluster " + key, value: clusterName(key) });
      input.addEventListener("input", function () { namesAt()[key] = input.value; saveEdits(); renderNav(); });
      head.appendChild(input);
    }
    head.appendChild(el("span", { "class": "muted meta", text: facts(key, list) }));
    var select = el("select", { "class": "sort", "aria-label": "Sort " + groupTitle(key) });
    SORTS.forEach(function (s) {
      if (s[0] === "confidence" && !D.confidence) return;
      select.appendChild(el("option", { value: s[0], text: s[1] }));
    });
    select.value = state.sort[key] || "distance";
    select.addEventListener("change", function () { state.sort[key] = select.value; state.shown[key] = PAGE; renderSection(key); });
    head.appendChild(el("label", {}, "sort by ", select));
    if (D.confidence) {
      var box = el("input", { type: "checkbox", "class": "low-only" });
      box.checked = !!state.low[key];
      box.addEventListener("change", function () { state.low[key] = box.checked; renderSection(key); });
      head.appendChild(el("label", {}, box, "low confidence only (< " + D.low_confidence + ")"));
    }
    return head;
  }
  function visibleList(key, list) {
    var shown = state.low[key] ? list.filter(isLow) : list;
    return sorted(shown, state.sort[key] || "distance");
  }
  var current = {};
  function buildSection(key, list) {
    var sec = el("section", { "class": "cluster", "data-cluster": String(key), id: "cluster-" + key,
                              "aria-label": groupTitle(key) });
    sec.style.setProperty("--c", colour(key));
    var order = visibleList(key, list);
    var limit = Math.min(order.length, state.shown[key] || PAGE);
    var grid = el("div", { "class": "grid", role: "list" });
    for (var j = 0; j < limit; j++) grid.appendChild(figure(order[j], key));
    sec.appendChild(headOf(key, list));
    sec.appendChild(grid);
    if (limit < order.length) {
      var more = el("button", { type: "button", "class": "more",
                                text: "show " + Math.min(PAGE, order.length - limit) + " more (" + (order.length - limit) + " not shown)" });
      more.addEventListener("click", function () { state.shown[key] = limit + PAGE; renderSection(key); });
      sec.appendChild(more);
    }
    sec._order = order;
    return sec;
  }
  function renderSection(key) {
    var old = document.getElementById("cluster-" + key);
    var fresh = buildSection(key, current[key]);
    if (old) old.replaceWith(fresh);
  }
  function keys() {
    var out = [];
    for (var c = 0; c < state.k; c++) out.push(c);
    if (current.good.length) out.push("good");
    if (current["new"].length) out.push("new");
    return out;
  }
  function renderNav() {
    var nav = document.getElementById("cluster-nav");
    nav.replaceChildren.apply(nav, keys().map(function (key) {
      var label = groupTitle(key) + (typeof key === "number" && clusterName(key) ? " “" + clusterName(key) + "”" : "");
      var a = el("a", { href: "#cluster-" + key, text: label + " (" + current[key].length + ")" });
      a.style.setProperty("--c", colour(key));
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        document.getElementById("cluster-" + key).scrollIntoView();
      });
      return a;
    }));
  }
  function render() {
    current = members();
    var groups = document.getElementById("groups");
    groups.replaceChildren.apply(groups, keys().map(function (key) { return buildSection(key, current[key]); }));
    renderNav();
    drawMap();
    document.getElementById("k-value").textContent = String(state.k);
    document.getElementById("summary").textContent = D.n + " images; K = " + state.k +
      (state.k === D.k_fit ? " (as fitted)" : " (fitted K = " + D.k_fit + ")") +
      (current.good.length ? "; " + current.good.length + " in the good group" : "") +
      (current["new"].length ? "; " + current["new"].length + " possible new types" : "");
  }

  // ------------------------------------------------------------------ K from the slider and the URL
  function kFromHash() {
    var m = /(?:^#|&)k=(\d+)/.exec(location.hash);
    if (!m) return null;
    return Math.max(D.k_min, Math.min(D.k_max, parseInt(m[1], 10)));
  }
  function setK(k, push) {
    if (k === state.k && document.getElementById("groups").childElementCount) return;
    state.k = k;
    document.getElementById("k-slider").value = String(k);
    if (push) history.replaceState(null, "", "#k=" + k);
    render();
  }

  // ------------------------------------------------------------------ map
  var mapPoints = [];
  function drawMap() {
    var canvas = document.getElementById("map");
    if (!D.map) return;
    var size = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1)) || 460;
    canvas.width = size; canvas.height = size;
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, size, size);
    var pad = 10 * (window.devicePixelRatio || 1), r = Math.max(2.5, size / 160);
    mapPoints = [];
    for (var i = 0; i < D.n; i++) {
      var x = pad + D.map[i][0] * (size - 2 * pad), y = pad + (1 - D.map[i][1]) * (size - 2 * pad);
      var p = placeOf(i);
      mapPoints.push([x, y, i]);
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = colour(p);
      ctx.fill();
      if (p === "new") { ctx.lineWidth = 2; ctx.strokeStyle = "#e00"; ctx.stroke(); }
    }
  }
  function nearestPoint(ev) {
    var canvas = document.getElementById("map");
    var rect = canvas.getBoundingClientRect(), scale = canvas.width / rect.width;
    var x = (ev.clientX - rect.left) * scale, y = (ev.clientY - rect.top) * scale;
    var best = -1, bestD = (12 * scale) * (12 * scale);
    mapPoints.forEach(function (p) {
      var d = (p[0] - x) * (p[0] - x) + (p[1] - y) * (p[1] - y);
      if (d < bestD) { bestD = d; best = p[2]; }
    });
    return best;
  }
  function setupMap() {
    var canvas = document.getElementById("map"), tip = document.getElementById("map-tip");
    if (!D.map) { canvas.closest(".map-box").hidden = true; return; }
    canvas.addEventListener("mousemove", function (ev) {
      var i = nearestPoint(ev);
      if (i < 0) { tip.style.display = "none"; return; }
      tip.replaceChildren(el("img", { src: D.thumbs[i], alt: "" }), el("span", { text: D.paths[i] }));
      var box = canvas.parentNode.getBoundingClientRect();
      tip.style.left = Math.min(ev.clientX - box.left + 12, box.width - 130) + "px";
      tip.style.top = (ev.clientY - box.top + 12) + "px";
      tip.style.display = "block";
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    canvas.addEventListener("click", function (ev) {
      var i = nearestPoint(ev);
      if (i >= 0) openZoom(i, null);
    });
    window.addEventListener("resize", drawMap);
  }

  // ------------------------------------------------------------------ zoom
  var heatCache = {};
  function heatCanvas(i) {
    if (heatCache[i]) return heatCache[i];
    var h = D.heat.grid[0], w = D.heat.grid[1], raw = atob(D.heat.maps[i]);
    var c = document.createElement("canvas");
    c.width = w; c.height = h;
    var ctx = c.getContext("2d"), img = ctx.createImageData(w, h);
    for (var p = 0; p < h * w; p++) {
      var v = raw.charCodeAt(p);
      img.data[4 * p] = D.heat.lut[3 * v]; img.data[4 * p + 1] = D.heat.lut[3 * v + 1];
      img.data[4 * p + 2] = D.heat.lut[3 * v + 2]; img.data[4 * p + 3] = Math.round(D.heat.opacity * v);
    }
    ctx.putImageData(img, 0, 0);
    heatCache[i] = c;
    return c;
  }
  function drawZoom(i) {
    var canvas = document.getElementById("zoom-canvas"), image = new Image();
    image.onload = function () {
      var scale = Math.max(1, Math.floor(480 / Math.max(image.width, image.height)));
      canvas.width = image.width * scale; canvas.height = image.height * scale;
      var ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
      if (state.heat && D.heat && D.heat.maps[i]) ctx.drawImage(heatCanvas(i), 0, 0, canvas.width, canvas.height);
      if (state.outline && D.masks && D.masks[i]) {
        var mask = new Image();
        mask.onload = function () { ctx.imageSmoothingEnabled = false; ctx.drawImage(mask, 0, 0, canvas.width, canvas.height); };
        mask.src = D.masks[i];
      }
    };
    image.src = D.thumbs[i];
  }
  function infoRows(i) {
    var p = placeOf(i), rows = [["path", D.paths[i]]];
    rows.push(["shown in", groupTitle(p) + (typeof p === "number" && clusterName(p) ? " “" + clusterName(p) + "”" : "")]);
    if (D.labels) rows.push(["label (folder)", D.labels[i]]);
    rows.push(["distance to centre", fmt(D.dist[kIndex()][i])]);
    rows.push(["top patch score", fmt(D.top_score[i])]);
    [["anomaly_score", "anomaly score"], ["confidence", "confidence"], ["novelty", "novelty"]].forEach(function (f) {
      if (D[f[0]]) rows.push([f[1], fmt(D[f[0]][i])]);
    });
    if (D.is_good) rows.push(["likely good (is_good)", D.is_good[i] ? "yes" : "no"]);
    if (D.new_type) rows.push(["possible new type", D.new_type[i] ? "yes" : "no"]);
    if (D.confidence && state.k !== D.k_fit) rows.push(["note", "confidence refers to the fitted K = " + D.k_fit]);
    return rows;
  }
  function moveControl(i) {
    var select = el("select", { id: "move-to", "aria-label": "Move this image to another cluster" });
    var here = placeOf(i);
    for (var c = 0; c < state.k; c++) {
      var o = el("option", { value: String(c), text: "cluster " + c + (clusterName(c) ? " “" + clusterName(c) + "”" : "") });
      if (c === here) o.selected = true;
      select.appendChild(o);
    }
    if (typeof here !== "number") select.insertBefore(el("option", { value: "", text: groupTitle(here), selected: "selected" }), select.firstChild);
    select.addEventListener("change", function () {
      if (select.value === "") return;
      movesAt()[i] = parseInt(select.value, 10);
      saveEdits();
      render();
      fillZoom(i);
    });
    return el("label", {}, "move to ", select);
  }
  function fillZoom(i) {
    var info = document.getElementById("zoom-info");
    var table = el("table", {});
    infoRows(i).forEach(function (r) { table.appendChild(el("tr", {}, el("td", { "class": "muted", text: r[0] }), el("td", { text: String(r[1]) }))); });
    var parts = [table, moveControl(i)];
    if (D.neighbours) {
      var row = el("div", { "class": "neighbours" });
      D.neighbours[i].forEach(function (j) {
        var b = el("button", { type: "button", title: D.paths[j], "aria-label": "open neighbour " + D.paths[j] },
                   el("img", { src: D.thumbs[j], alt: D.paths[j] }));
        b.addEventListener("click", function () { openZoom(j, null); });
        row.appendChild(b);
      });
      parts.push(el("h3", { text: "nearest images in this run" }), row);
    }
    info.replaceChildren.apply(info, parts);
    document.getElementById("zoom-title").textContent = D.paths[i];
    drawZoom(i);
  }
  function openZoom(i, order) {
    state.zoomList = order || [i];
    state.zoomPos = state.zoomList.indexOf(i);
    fillZoom(i);
    var dlg = document.getElementById("zoom");
    if (!dlg.open) dlg.showModal();
  }
  function stepZoom(delta) {
    var pos = state.zoomPos + delta;
    if (pos < 0 || pos >= state.zoomList.length) return;
    state.zoomPos = pos;
    fillZoom(state.zoomList[pos]);
  }
  function setupZoom() {
    var dlg = document.getElementById("zoom"), heat = document.getElementById("heat-toggle"),
        outline = document.getElementById("outline-toggle");
    heat.checked = state.heat; heat.disabled = !D.heat;
    outline.checked = state.outline; outline.closest("label").hidden = !D.masks;
    heat.addEventListener("change", function () { state.heat = heat.checked; drawZoom(state.zoomList[state.zoomPos]); });
    outline.addEventListener("change", function () { state.outline = outline.checked; drawZoom(state.zoomList[state.zoomPos]); });
    document.getElementById("zoom-prev").addEventListener("click", function () { stepZoom(-1); });
    document.getElementById("zoom-next").addEventListener("click", function () { stepZoom(1); });
    document.getElementById("zoom-close").addEventListener("click", function () { dlg.close(); });
    dlg.addEventListener("keydown", function (ev) {
      if (ev.target.tagName === "SELECT" || (ev.target.tagName === "INPUT" && ev.target.type === "text")) return;
      if (ev.key === "ArrowRight") stepZoom(1);
      else if (ev.key === "ArrowLeft") stepZoom(-1);
      else if (ev.key === "h" && D.heat) { heat.checked = !heat.checked; heat.dispatchEvent(new Event("change")); }
      else return;
      ev.preventDefault();
    });
  }
  function setupGalleries() {
    var groups = document.getElementById("groups");
    function open(fig) {
      var sec = fig.closest("section.cluster");
      openZoom(parseInt(fig.getAttribute("data-index"), 10), sec._order);
    }
    groups.addEventListener("click", function (ev) {
      var fig = ev.target.closest("figure.thumb");
      if (fig) open(fig);
    });
    groups.addEventListener("keydown", function (ev) {
      var fig = ev.target.closest && ev.target.closest("figure.thumb");
      if (!fig) return;
      if (ev.key === "Enter" || ev.key === " ") { open(fig); ev.preventDefault(); return; }
      var step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      var next = step === 1 ? fig.nextElementSibling : step === -1 ? fig.previousElementSibling : null;
      if (next) { next.focus(); ev.preventDefault(); }
    });
  }

  // ------------------------------------------------------------------ edits kept in this browser
  // Names and moves are saved in localStorage under the run's id, so a reload (or reopening the file) keeps them.
  // What is read back is checked like any input: another page of the same origin could have written it.
  function intKey(key, low, high) {
    var n = parseInt(key, 10);
    return String(n) === String(key) && n >= low && n < high ? n : null;
  }
  // saved[K][key] -> into[K][key] for every K the page offers, keeping the entries valid(key, value, K) accepts.
  function restorePerK(saved, into, valid) {
    Object.keys(saved || {}).forEach(function (k) {
      var kk = intKey(k, D.k_min, D.k_max + 1), given = saved[k], out = {};
      if (kk === null || !given || typeof given !== "object") return;
      Object.keys(given).forEach(function (key) { if (valid(key, given[key], kk)) out[parseInt(key, 10)] = given[key]; });
      into[kk] = out;
    });
  }
  function validName(c, name, k) { return intKey(c, 0, k) !== null && typeof name === "string" && name.length <= 200; }
  function validMove(i, to, k) { return intKey(i, 0, D.n) !== null && typeof to === "number" && intKey(to, 0, k) !== null; }
  function loadEdits() {
    var saved = null;
    try { saved = JSON.parse(window.localStorage.getItem(STORE) || "null"); } catch (e) { return; }
    if (!saved || typeof saved !== "object") return;
    restorePerK(saved.names, state.names, validName);
    restorePerK(saved.moves, state.moves, validMove);
  }
  function saveEdits() {
    // storage switched off or full: the edits live until the page is closed
    try { window.localStorage.setItem(STORE, JSON.stringify({ names: state.names, moves: state.moves })); } catch (e) { return; }
  }
  function forgetEdits() {
    try { window.localStorage.removeItem(STORE); } catch (e) { /* nothing stored */ }
    state.names = {};
    state.names[D.k_fit] = Object.assign({}, D.names || {});
    state.moves = {};
    render();
  }

  // ------------------------------------------------------------------ export
  function csvField(v) {
    var s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  // Text a spreadsheet would run as a formula (or that starts with ') gets a leading ' (files/safe_text.csv_cell).
  function csvText(v) {
    var s = v === null || v === undefined ? "" : String(v);
    var formula = /^[=+\-@\t\r]/.test(s) && !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s);
    return formula || s.charAt(0) === "'" ? "'" + s : s;
  }
  function exportRows() {
    var rows = [];
    for (var i = 0; i < D.n; i++) {
      var p = placeOf(i), moved = movesAt()[i] !== undefined, group = typeof p === "number" ? "cluster" : p;
      var cluster = typeof p === "number" ? p : D.cuts[kIndex()][i];
      rows.push({ path: D.paths[i], cluster: cluster >= 0 ? cluster : null,
                  name: typeof p === "number" ? clusterName(p) : "", group: group, moved: moved });
    }
    return rows;
  }
  function buildCsv() {
    var lines = [D.review.columns.join(",")];
    exportRows().forEach(function (r) {
      lines.push([csvText(r.path), r.cluster, csvText(r.name), r.group, r.moved ? 1 : 0].map(csvField).join(","));
    });
    return lines.join("\n") + "\n";
  }
  function buildJson() {
    var rows = exportRows(), clusters = [];
    for (var c = 0; c < state.k; c++) {
      var rep = D.reps[kIndex()][c];
      clusters.push({ cluster: c, name: clusterName(c), size: current[c].length,
                      representative: rep >= 0 ? D.paths[rep] : null });
    }
    return JSON.stringify({ format: D.review.format, version: D.review.version, k: state.k, k_fit: D.k_fit,
                            title: D.title, command: D.command, clusters: clusters, images: rows }, null, 1) + "\n";
  }
  function download(text, name, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = el("a", { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  }
  function setupExport() {
    document.getElementById("export-csv").addEventListener("click", function () { download(buildCsv(), D.review.csv_name, "text/csv"); });
    document.getElementById("export-json").addEventListener("click", function () { download(buildJson(), D.review.json_name, "application/json"); });
    document.getElementById("forget-edits").addEventListener("click", forgetEdits);
  }

  // ------------------------------------------------------------------ header
  function colourBar() {
    var box = document.getElementById("colour-bar");
    if (!D.heat) { box.hidden = true; return; }
    var c = el("canvas", { width: "256", height: "1", "aria-hidden": "true" }), ctx = c.getContext("2d"), img = ctx.createImageData(256, 1);
    for (var v = 0; v < 256; v++) {
      img.data[4 * v] = D.heat.lut[3 * v]; img.data[4 * v + 1] = D.heat.lut[3 * v + 1];
      img.data[4 * v + 2] = D.heat.lut[3 * v + 2]; img.data[4 * v + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    box.replaceChildren(el("span", { text: fmt(D.heat.range[0]) }), c, el("span", { text: fmt(D.heat.range[1]) }),
                        el("span", { "class": "muted", text: D.heat.label + ", one scale for the run" }));
  }
  function header() {
    document.getElementById("title").textContent = D.title;
    var warn = document.getElementById("warnings");
    warn.replaceChildren.apply(warn, D.warnings.map(function (w) { return el("p", { text: w }); }));
    var table = document.getElementById("facts");
    D.metrics.concat(D.facts).forEach(function (kv) {
      table.appendChild(el("tr", {}, el("td", { text: kv[0] }), el("td", { text: typeof kv[1] === "number" ? fmt(kv[1]) : String(kv[1]) })));
    });
    if (D.overview) document.getElementById("overview-box").appendChild(el("img", { "class": "overview", src: D.overview, alt: "tree or cluster sizes at the fitted K" }));
    else document.getElementById("overview-box").hidden = true;
    var slider = document.getElementById("k-slider");
    slider.min = String(D.k_min); slider.max = String(D.k_max); slider.value = String(state.k);
    slider.disabled = D.k_min === D.k_max;
    slider.addEventListener("input", function () { setK(parseInt(slider.value, 10), true); });
    var galleryHeat = document.getElementById("gallery-heat");
    galleryHeat.closest("label").hidden = !D.heat;
    galleryHeat.addEventListener("change", function () { state.galleryHeat = galleryHeat.checked; render(); });
    window.addEventListener("hashchange", function () { var k = kFromHash(); if (k !== null) setK(k, false); });
    colourBar();
  }

  loadEdits();
  header();
  setupMap();
  setupZoom();
  setupGalleries();
  setupExport();
  var k0 = kFromHash();
  setK(k0 === null ? D.k_fit : k0, false);
  window.anomclustReport = { buildCsv: buildCsv, buildJson: buildJson, state: state, setK: setK };
  if (window.performance && performance.mark) performance.mark("anomclust-ready");
  document.documentElement.setAttribute("data-ready", "1");
})();
