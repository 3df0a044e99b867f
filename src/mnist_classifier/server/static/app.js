// The drawing page: strokes on a canvas -> PNG -> POST /v1/predict -> digit, ten bars, the 28x28 seen.
// The server does all the image normalization; the page only draws, sends and shows.
"use strict";

const LIVE_DELAY_MS = 120;   // while drawing, predict at most this long after the last move (debounce)
const STROKE = 0.08;         // pen width as a fraction of the canvas: like a finger or a thick marker

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const seen = $("seen");
const result = $("result");

const state = {
  hasInk: false,        // anything on the canvas worth sending
  pointerId: null,      // the one pointer drawing now (a second finger is ignored)
  last: null,           // previous point of the current stroke
  timer: null,          // pending debounced prediction
  sent: 0,              // sequence number of the latest request sent
  shown: 0,             // sequence number of the latest answer shown
  inFlight: false,
  again: false,         // the canvas changed while a request was in flight
  penUpAt: null,        // performance.now() of the last pen lift, for the latency figure
  penUpSeq: 0,
};

// Figures the browser test and benchmark read: page ready, and pen-lift-to-prediction latency.
window.mnistApp = { readyMs: null, penLiftToPredictionMs: null, predictions: 0 };

// ---------------------------------------------------------------- drawing

function clearPad() {
  ctx.fillStyle = "#fff";  // dark ink on white, like paper; the server handles either polarity
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.hasInk = false;
}

function toCanvas(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (pad.width / box.width),
           y: (event.clientY - box.top) * (pad.height / box.height) };
}

function strokeTo(point) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = STROKE * pad.width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  const from = state.last || point;
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(point.x + (from === point ? 0.01 : 0), point.y);  // a lone tap still leaves a dot
  ctx.stroke();
  state.last = point;
  state.hasInk = true;
}

pad.addEventListener("pointerdown", (event) => {
  if (state.pointerId !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  state.pointerId = event.pointerId;
  try { pad.setPointerCapture(event.pointerId); } catch (error) { /* synthetic pointers cannot be captured */ }
  state.last = null;
  strokeTo(toCanvas(event));
  showPending();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointerId) return;
  // Coalesced events keep fast strokes smooth: the browser may batch several moves into one event.
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of (moves.length ? moves : [event])) strokeTo(toCanvas(move));
  schedulePrediction(LIVE_DELAY_MS);
});

function endStroke(event) {
  if (event.pointerId !== state.pointerId) return;
  state.pointerId = null;
  state.last = null;
  state.penUpAt = performance.now();
  state.penUpSeq = state.sent + 1;
  schedulePrediction(0);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

// ---------------------------------------------------------------- predicting

function schedulePrediction(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(predictCanvas, delay);
}

function predictCanvas() {
  state.timer = null;
  if (!state.hasInk) return showEmpty();
  if (state.inFlight) { state.again = true; return; }  // one request at a time; the newest canvas goes next
  pad.toBlob((blob) => send(blob, "drawing.png"), "image/png");
}

async function send(blob, name) {
  const seq = ++state.sent;
  state.inFlight = true;
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const response = await fetch("/v1/predict", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (seq > state.shown) {
      state.shown = seq;
      if (response.ok) showPrediction(body, seq); else showError(body.detail || `HTTP ${response.status}`);
    }
  } catch (error) {
    showError(`The server did not answer (${error.message}).`);
  } finally {
    state.inFlight = false;
    if (state.again) { state.again = false; predictCanvas(); }
  }
}

// ---------------------------------------------------------------- showing

const bars = [];
function buildBars() {
  const list = $("bars");
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.innerHTML = `<span class="label">${digit}</span><span class="track"><span class="fill"></span></span>` +
                     `<span class="pct">0%</span>`;
    item.setAttribute("aria-label", `${digit}: 0%`);
    list.appendChild(item);
    bars.push(item);
  }
}

function setBars(probabilities, best) {
  bars.forEach((item, digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    const percent = `${(100 * p).toFixed(p >= 0.995 || p < 0.0005 ? 0 : 1)}%`;
    item.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".pct").textContent = percent;
    item.setAttribute("aria-label", `${digit}: ${percent}`);
    item.classList.toggle("best", digit === best);
  });
}

function setSeen(image) {
  const c = seen.getContext("2d");
  if (!image) { c.fillStyle = "#000"; c.fillRect(0, 0, 28, 28); return; }
  const pixels = c.createImageData(28, 28);
  image.forEach((row, y) => row.forEach((value, x) => {
    const i = 4 * (28 * y + x);
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = Math.round(255 * value);  // ink 1.0 -> white
    pixels.data[i + 3] = 255;
  }));
  c.putImageData(pixels, 0, 0);
}

function setAnswer(view, digit, verdict, status) {
  result.dataset.state = view;
  $("digit").textContent = digit;
  $("verdict").textContent = verdict;
  $("status").textContent = status;
}

function showEmpty() {
  setAnswer("empty", "–", "No digit", "Draw a digit to see what the model reads.");
  setBars(null, -1);
  setSeen(null);
}

function showPending() {
  if (result.dataset.state === "empty") setAnswer("pending", "…", "Reading…", "Keep drawing; the answer follows.");
}

function showPrediction(row, seq) {
  setSeen(row.image);
  setBars(row.probabilities, row.digit);
  if (row.digit === null || row.digit === undefined) {
    setAnswer("nodigit", "–", "No digit", row.reason ? `No digit found: ${row.reason}.` : "No digit found.");
  } else {
    const sure = `${(100 * row.confidence).toFixed(1)}% sure`;
    setAnswer("digit", String(row.digit), `It's a ${row.digit}`, row.uncertain ? `${sure}, but unsure` : sure);
  }
  window.mnistApp.predictions += 1;
  if (state.penUpAt !== null && seq >= state.penUpSeq) {
    const penUpAt = state.penUpAt;
    state.penUpAt = null;
    // Measured at the next frame: that is when the answer is actually on screen.
    requestAnimationFrame(() => { window.mnistApp.penLiftToPredictionMs = performance.now() - penUpAt; });
  }
}

function showError(message) {
  setAnswer("error", "!", "Could not read that", message);
  setBars(null, -1);
  setSeen(null);
}

// ---------------------------------------------------------------- upload and drag-and-drop

async function readFile(file) {
  if (!file) return;
  clearTimeout(state.timer);
  clearPad();
  try {
    const bitmap = await createImageBitmap(file);  // shown on the pad, scaled to fit
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    state.hasInk = true;
  } catch (error) {
    // Not an image the browser can show; the server still gets it and says what is wrong.
  }
  showPending();
  send(file, file.name || "upload");  // the original file: full resolution, the server normalizes it
}

$("upload").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (event) => { readFile(event.target.files[0]); event.target.value = ""; });

const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  readFile(event.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- controls and start

function clearAll() {
  clearTimeout(state.timer);
  clearPad();
  state.shown = state.sent;  // an answer still on its way is for the old drawing: drop it
  state.penUpAt = null;
  showEmpty();
}
$("clear").addEventListener("click", clearAll);

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "INPUT") return;
  if (event.key === "Escape" || event.key === "Delete") { clearAll(); event.preventDefault(); }
  else if (event.key === "u" || event.key === "U") { $("file").click(); event.preventDefault(); }
});

async function showModel() {
  try {
    const info = await (await fetch("/v1/model")).json();
    const accuracy = info.metrics && typeof info.metrics.accuracy === "number"
      ? `, ${(100 * info.metrics.accuracy).toFixed(2)}% on the MNIST test set` : "";
    $("model-info").textContent = `Model: ${info.architecture || "unknown"}${accuracy}`;
  } catch (error) {
    $("model-info").textContent = "Model information unavailable";
  }
}

buildBars();
clearPad();
showEmpty();
window.mnistApp.readyMs = performance.now();  // milliseconds since navigation start
document.documentElement.dataset.ready = "1";
showModel();
