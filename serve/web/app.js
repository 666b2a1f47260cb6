// faprompt-serve's page: polls GET /api/cameras every second and each
// camera's /history and /events every two; the live view is an <img> on
// /live/NAME.mjpg (multipart/x-mixed-replace, shown by the browser itself).
"use strict";

const tiles = new Map(); // name -> {el, parts…}
let tick = 0;
// A browser opens at most 6 HTTP/1.1 connections to one host and a live
// view holds one for as long as it shows: the first LIVE_AT_ONCE tiles
// stream at once, the others on a click, leaving connections for the API.
const LIVE_AT_ONCE = 4;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function liveUrl(name) {
  return "/live/" + encodeURIComponent(name) + ".mjpg";
}

function makeTile(name) {
  const t = { el: el("section", "tile") };
  t.el.dataset.camera = name;
  t.live = el("img", "live");
  t.live.alt = "live view of " + name;
  // a stream that failed (the camera gone a moment, too many viewers) is
  // asked for again a little later
  t.live.addEventListener("error", () => {
    setTimeout(() => { if (tiles.get(name) === t && t.on) t.live.src = liveUrl(name) + "?" + Date.now(); },
               3000);
  });
  const h = el("h2");
  t.name = el("span", "name", name);
  t.state = el("span", "state");
  t.toggle = el("button", "toggle");
  t.toggle.type = "button";
  t.toggle.addEventListener("click", () => setLive(t, name, !t.on));
  h.append(t.name, t.state, t.toggle);
  setLive(t, name, [...tiles.values()].filter((x) => x.on).length < LIVE_AT_ONCE);
  t.figures = el("div", "figures");
  t.reason = el("div", "reason");
  t.spark = el("canvas", "spark");
  t.spark.width = 300;
  t.spark.height = 60;
  t.events = el("ul", "events");
  t.el.append(t.live, h, t.figures, t.reason, t.spark, t.events);
  return t;
}

function setLive(t, name, on) {
  t.on = on;
  if (on) t.live.src = liveUrl(name);
  else t.live.removeAttribute("src"); // closes the stream
  t.toggle.textContent = on ? "pause" : "live";
  t.toggle.title = on ? "stop the live view" : "show the live view";
}

function fmt(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function showCamera(t, c) {
  t.state.textContent = c.state;
  t.state.className = "state " + c.state;
  t.figures.textContent = fmt(c.fps, 1) + " fps · score " + fmt(c["last-score"], 3) +
    " · " + c.anomalies + " anomalies · " + c.viewers + " viewer(s)";
  t.reason.textContent = c.state === "running" ? "" : (c.reason || "");
}

function drawSpark(t, h) {
  const cv = t.spark, g = cv.getContext("2d");
  const w = cv.width, ht = cv.height;
  g.clearRect(0, 0, w, ht);
  const s = h.score;
  const vals = s.filter((v) => v !== null);
  if (!vals.length) return;
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (h.threshold !== null) { lo = Math.min(lo, h.threshold); hi = Math.max(hi, h.threshold); }
  if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
  const n = Math.max(s.length, 2);
  const x = (i) => (i / (n - 1)) * (w - 2) + 1;
  const y = (v) => ht - 2 - ((v - lo) / (hi - lo)) * (ht - 4);
  if (h.threshold !== null) {
    g.strokeStyle = "#f85149";
    g.setLineDash([4, 3]);
    g.beginPath();
    g.moveTo(0, y(h.threshold));
    g.lineTo(w, y(h.threshold));
    g.stroke();
    g.setLineDash([]);
  }
  g.strokeStyle = "#58a6ff";
  g.lineWidth = 1.5;
  g.beginPath();
  let pen = false;
  s.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    if (pen) g.lineTo(x(i), y(v)); else g.moveTo(x(i), y(v));
    pen = true;
  });
  g.stroke();
}

function showEvents(t, data) {
  const items = data.events.map((e) => {
    const li = el("li");
    const b = el("button", "event",
                 new Date(e.unix * 1000).toLocaleTimeString() + " · score " + fmt(e.score, 3));
    b.type = "button";
    if (e.snapshot) {
      b.dataset.snapshot = e.snapshot;
      b.addEventListener("click", () => openSnapshot(e.snapshot, data.camera + ", " + e.time));
    } else {
      b.disabled = true;
      b.title = "no snapshot (recording off, or not written yet)";
    }
    li.append(b);
    return li;
  });
  t.events.replaceChildren(...items);
}

function openSnapshot(url, caption) {
  document.getElementById("snapshot").src = url;
  document.getElementById("snapshot-caption").textContent = caption;
  document.getElementById("viewer").hidden = false;
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

async function refreshDetails(name, t) {
  try {
    const [h, e] = await Promise.all([
      getJson("/api/cameras/" + encodeURIComponent(name) + "/history"),
      getJson("/api/cameras/" + encodeURIComponent(name) + "/events")]);
    if (tiles.get(name) !== t) return;
    drawSpark(t, h);
    showEvents(t, e);
  } catch (err) { /* the camera went away meanwhile: the next list says so */ }
}

async function refresh() {
  let cams;
  try {
    cams = (await getJson("/api/cameras")).cameras;
  } catch (err) {
    document.getElementById("summary").textContent = "service unreachable";
    return;
  }
  const grid = document.getElementById("grid");
  const seen = new Set();
  for (const c of cams) {
    seen.add(c.name);
    let t = tiles.get(c.name);
    if (!t) {
      t = makeTile(c.name);
      tiles.set(c.name, t);
      grid.append(t.el);
    }
    showCamera(t, c);
    if (tick % 2 === 0 || !t.loaded) {
      t.loaded = true;
      refreshDetails(c.name, t);
    }
  }
  for (const [name, t] of tiles) {
    if (!seen.has(name)) {
      t.live.removeAttribute("src"); // closes the stream
      t.el.remove();
      tiles.delete(name);
    }
  }
  document.getElementById("empty").hidden = cams.length > 0;
  const running = cams.filter((c) => c.state === "running").length;
  document.getElementById("summary").textContent =
    cams.length + " camera(s), " + running + " running";
  tick++;
}

document.getElementById("viewer-close").addEventListener("click", () => {
  document.getElementById("viewer").hidden = true;
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") document.getElementById("viewer").hidden = true;
});
refresh();
setInterval(refresh, 1000);
