// The drawing page: strokes on a canvas -> PNG -> POST /v1/predict -> digit, ten bars, the 28x28 seen;
// in number mode a wider canvas -> POST /v1/predict/number -> the number, each digit boxed on the canvas.
// The server does all the image normalization and segmentation; the page only draws, sends and shows.
"use strict";

const LIVE_DELAY_MS = 120;   // while drawing, predict at most this long after the last move (debounce)
const STROKE = 0.08;         // pen width as a fraction of the canvas height: like a finger or a thick marker
const MODES = {
  digit: { endpoint: "/v1/predict", width: 280, height: 280,
           label: "Drawing area: draw a digit here, or drop an image file" },
  number: { endpoint: "/v1/predict/number", width: 560, height: 280,  // room for several digits in a row
            label: "Drawing area: write a number here, its digits side by side, or drop an image file" },
};

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const seen = $("seen");
const boxes = $("boxes");  // an overlay: the digits found in number mode, never part of the image sent
const result = $("result");

const state = {
  mode: "digit",
  hasInk: false,        // anything on the canvas worth sending
  pointerId: null,      // the one pointer drawing now (a second finger is ignored)
  last: null,           // previous point of the current stroke
  timer: null,          // pending debounced prediction
  sent: 0,              // sequence number of the latest request sent
  shown: 0,             // sequence number of the latest answer shown
  inFlight: false,
  again: false,         // the canvas changed while a request was in flight
  penUpAt: null,        // performance.now() of the last pen lift, for the latency figure
  penUpSeq: 0,          // the first request that carries the canvas as it was at that lift
  lifts: 0,             // pen lifts so far: a latency measured for an older lift is dropped
};

// Figures the browser test and benchmark read: page ready, and pen-lift-to-prediction latency.
window.mnistApp = { readyMs: null, penLiftToPredictionMs: null, predictions: 0 };

// ---------------------------------------------------------------- drawing

function clearPad() {
  ctx.fillStyle = "#fff";  // dark ink on white, like paper; the server handles either polarity
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.hasInk = false;
  clearBoxes();
}

function setMode(mode) {
  if (mode === state.mode || !MODES[mode]) return;
  state.mode = mode;
  document.body.dataset.mode = mode;
  document.querySelector(`input[name="mode"][value="${mode}"]`).checked = true;
  pad.width = boxes.width = MODES[mode].width;  // resizing a canvas clears it; clearAll repaints the paper
  pad.height = boxes.height = MODES[mode].height;
  pad.setAttribute("aria-label", MODES[mode].label);
  clearAll();
}

function toCanvas(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (pad.width / box.width),
           y: (event.clientY - box.top) * (pad.height / box.height) };
}

function strokeTo(point) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = STROKE * pad.height;
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
  state.lifts += 1;
  window.mnistApp.penLiftToPredictionMs = null;  // the figure, when it comes, is this lift's
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
  pad.toBlob((blob) => send(blob, "drawing.png", { scale: 1, dx: 0, dy: 0 }), "image/png");
}

// ``view`` maps the sent image's pixels onto the pad (an upload is scaled to fit), for the digits' boxes.
async function send(blob, name, view) {
  const seq = ++state.sent;
  state.inFlight = true;
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const response = await fetch(MODES[state.mode].endpoint, { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (seq > state.shown) {
      state.shown = seq;
      if (response.ok) showPrediction(body, seq, view); else showError(body.detail || `HTTP ${response.status}`);
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

function setDigits(digits) {
  const list = $("digits");
  list.replaceChildren(...digits.map((d) => {
    const item = document.createElement("li");
    const percent = `${(100 * d.confidence).toFixed(d.confidence >= 0.995 ? 0 : 1)}%`;
    item.innerHTML = `<span class="d">${d.digit}</span><span class="pct">${percent}</span>`;
    item.setAttribute("aria-label", `${d.digit}: ${percent} sure`);
    return item;
  }));
}

function clearBoxes() {
  boxes.getContext("2d").clearRect(0, 0, boxes.width, boxes.height);
}

function drawBoxes(digits, view) {
  const c = boxes.getContext("2d");
  clearBoxes();
  c.strokeStyle = c.fillStyle = "#2457c5";
  c.lineWidth = 2;
  c.font = "bold 16px system-ui, sans-serif";
  for (const d of digits) {
    const [x0, y0, x1, y1] = d.box.map((v, i) => (i % 2 ? view.dy : view.dx) + v * view.scale);
    c.strokeRect(x0, y0, x1 - x0, y1 - y0);
    c.fillText(String(d.digit), x0 + 3, Math.max(16, y0 - 4));
  }
}

function showEmpty() {
  const number = state.mode === "number";
  setAnswer("empty", "–", number ? "No number" : "No digit",
            number ? "Write a number to see what the model reads." : "Draw a digit to see what the model reads.");
  setBars(null, -1);
  setSeen(null);
  setDigits([]);
  clearBoxes();
}

function showPending() {
  if (result.dataset.state === "empty") setAnswer("pending", "…", "Reading…", "Keep drawing; the answer follows.");
}

function showDigit(row) {
  setSeen(row.image);
  setBars(row.probabilities, row.digit);
  if (row.digit === null || row.digit === undefined) {
    setAnswer("nodigit", "–", "No digit", row.reason ? `No digit found: ${row.reason}.` : "No digit found.");
  } else {
    const sure = `${(100 * row.confidence).toFixed(1)}% sure`;
    const status = row.note ? `${sure}, but it looks like several digits: switch to “A number” to read them.`
                 : row.uncertain ? `${sure}, but unsure` : sure;
    setAnswer("digit", String(row.digit), `It's a ${row.digit}`, status);
  }
}

function showNumber(row, view) {
  const digits = row.digits || [];
  setDigits(digits);
  drawBoxes(digits, view);
  if (!row.number) {
    setAnswer("nodigit", "–", "No number", row.reason ? `No digits found: ${row.reason}.` : "No digits found.");
  } else {
    const count = `${digits.length} digit${digits.length === 1 ? "" : "s"}`;
    const sure = `${(100 * row.confidence).toFixed(1)}% sure of all ${count}`;
    setAnswer("digit", row.number, `It's ${row.number}`, row.uncertain ? `${sure}, but unsure of some` : sure);
  }
}

function showPrediction(row, seq, view) {
  if ("number" in row) showNumber(row, view); else showDigit(row);
  window.mnistApp.predictions += 1;
  if (state.penUpAt !== null && seq >= state.penUpSeq) {
    const penUpAt = state.penUpAt, lift = state.lifts;
    state.penUpAt = null;
    // Measured at the next frame: that is when the answer is actually on screen (unless the pen lifted again).
    requestAnimationFrame(() => {
      if (lift === state.lifts) window.mnistApp.penLiftToPredictionMs = performance.now() - penUpAt;
    });
  }
}

function showError(message) {
  setAnswer("error", "!", "Could not read that", message);
  setBars(null, -1);
  setSeen(null);
  setDigits([]);
  clearBoxes();
}

// ---------------------------------------------------------------- upload and drag-and-drop

async function readFile(file) {
  if (!file) return;
  clearTimeout(state.timer);
  clearPad();
  let view = { scale: 1, dx: 0, dy: 0 };
  try {
    const bitmap = await createImageBitmap(file);  // shown on the pad, scaled to fit
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    view = { scale, dx: (pad.width - w) / 2, dy: (pad.height - h) / 2 };
    ctx.drawImage(bitmap, view.dx, view.dy, w, h);
    state.hasInk = true;
  } catch (error) {
    // Not an image the browser can show; the server still gets it and says what is wrong.
  }
  showPending();
  send(file, file.name || "upload", view);  // the original file: full resolution, the server normalizes it
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
document.querySelectorAll('input[name="mode"]').forEach((input) => {
  input.addEventListener("change", () => setMode(input.value));
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "INPUT") return;
  if (event.key === "Escape" || event.key === "Delete") { clearAll(); event.preventDefault(); }
  else if (event.key === "u" || event.key === "U") { $("file").click(); event.preventDefault(); }
  else if (event.key === "n" || event.key === "N") {
    setMode(state.mode === "digit" ? "number" : "digit");
    event.preventDefault();
  }
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
document.body.dataset.mode = state.mode;
clearPad();
showEmpty();
window.mnistApp.readyMs = performance.now();  // milliseconds since navigation start
document.documentElement.dataset.ready = "1";
showModel();
