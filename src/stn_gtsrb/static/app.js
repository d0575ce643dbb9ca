// stn-gtsrb: the page's behaviour, shared by `serve` and `export --web`. Plain JavaScript, no libraries.
// It asks window.stnBackend (server.js: this server's JSON API; local.js: the model in this browser) for
//   info() -> the model's record, predict(file, sliders, signal) -> {ok, body: answer or {error}},
//   sample() -> {file, description} or {error}; the answer has the shape of POST /api/predict's.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const SLIDERS = ["rotation", "scale", "shift_x", "shift_y"];
const DEBOUNCE_MS = 40;

const state = { file: null, sent: 0, shown: 0, timer: null, controller: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function sliderText(name, value) {
  if (name === "rotation") return `${value}°`;
  if (name === "scale") return Number(value).toFixed(2);
  return `${Math.round(value * 100)}%`;
}

async function predict() {
  if (!state.file) return;
  const sent = ++state.sent;
  const sliders = Object.fromEntries(SLIDERS.map((name) => [name, Number($(name).value)]));
  if (state.controller) state.controller.abort(); // this request supersedes the one still on its way
  const controller = (state.controller = new AbortController());
  let answer;
  try {
    answer = await window.stnBackend.predict(state.file, sliders, controller.signal);
  } catch (failure) {
    if (failure.name === "AbortError") return; // superseded: its answer would be stale
    answer = { ok: false, body: { error: `no answer (${failure.message})` } };
  }
  if (sent < state.shown) return; // a later request's answer is already on screen
  state.shown = sent;
  if (!answer.ok) {
    showError(answer.body.error || "the request failed");
    return;
  }
  showError("");
  render(answer.body);
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(predict, DEBOUNCE_MS);
}

function element(tag, attributes = {}, namespace = null) {
  const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function render(answer) {
  const size = answer.image_size;
  const pad = size / 4;
  const stage = $("stage");
  stage.setAttribute("viewBox", `${-pad} ${-pad} ${size + 2 * pad} ${size + 2 * pad}`);
  for (const [key, value] of Object.entries({ x: 0, y: 0, width: size, height: size })) {
    $("frame").setAttribute(key, value);
    $("input-image").setAttribute(key, value);
  }
  $("input-image").setAttribute("href", answer.input);

  const regions = $("regions");
  regions.replaceChildren();
  const views = $("views");
  views.replaceChildren();
  for (const t of answer.transformers) {
    const points = t.outline.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join(" ");
    regions.append(element("polygon", { points, stroke: t.colour, "data-position": t.position }, SVG));
    for (const [x, y] of t.corners) {
      regions.append(element("circle", { cx: x, cy: y, r: 0.55, fill: t.colour }, SVG));
    }
    const figure = element("figure", { class: "view" });
    const image = element("img", { src: t.view, alt: `transformer ${t.position}'s view` });
    image.style.borderColor = t.colour;
    const caption = element("figcaption");
    caption.textContent = `transformer before conv${t.position}: what it sees`;
    figure.append(image, caption);
    views.append(figure);
  }
  if (!answer.transformers.length) {
    const note = element("p", { class: "muted" });
    note.textContent = "This model has no spatial transformer.";
    views.append(note);
  }

  const top = $("top");
  top.replaceChildren();
  for (const entry of answer.top) {
    const item = element("li", { "data-class": entry.class });
    const name = element("span", { class: "name", title: entry.name });
    const id = element("b");
    id.textContent = entry.class;
    name.append(id, entry.name);
    const bar = element("span", { class: "bar" });
    const fill = element("span");
    fill.style.width = `${(entry.probability * 100).toFixed(1)}%`;
    bar.append(fill);
    const p = element("span", { class: "p" });
    p.textContent = `${(entry.probability * 100).toFixed(1)}%`;
    item.append(name, bar, p);
    top.append(item);
  }
  $("result").hidden = false;
  document.body.dataset.answered = String(state.shown);
}

function useFile(file, description) {
  state.file = file;
  $("source").textContent = description;
  predict();
}

async function loadModel() {
  try {
    const info = await window.stnBackend.info();
    const accuracy = Object.entries(info.accuracy).map(([split, value]) => `${split} ${value.toFixed(2)}%`);
    $("model-info").textContent = `${info.name}: ${info.config.net} net, ${info.parameters.toLocaleString()} ` +
      `parameters, ${info.transformers.length} transformer${info.transformers.length === 1 ? "" : "s"}, ` +
      `${info.image_size} px input` +
      (accuracy.length ? `, recorded accuracy ${accuracy.join(", ")}` : "");
    $("sample").hidden = !info.sample_images;
  } catch (failure) {
    $("model-info").textContent = `cannot load the model (${failure.message})`;
  }
}

async function randomSample() {
  const sample = await window.stnBackend.sample();
  if (sample.error) {
    showError(sample.error);
    return;
  }
  useFile(sample.file, sample.description);
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) useFile(file, file.name);
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) useFile(file, file.name);
  });
  $("sample").addEventListener("click", randomSample);
  for (const name of SLIDERS) {
    $(name).addEventListener("input", () => {
      $(`${name}-value`).textContent = sliderText(name, $(name).value);
      schedule();
    });
  }
  $("reset").addEventListener("click", () => {
    for (const name of SLIDERS) {
      $(name).value = name === "scale" ? 1 : 0;
      $(`${name}-value`).textContent = sliderText(name, $(name).value);
    }
    schedule();
  });
  loadModel();
}

setup();
