// The page talks to the public API only: GET /metadata, POST /classify.
"use strict";

const KEY_STORAGE = "efficientnet-api-key";
const DEVICES = {
  CUDAExecutionProvider: "GPU (CUDA)",
  TensorrtExecutionProvider: "GPU (TensorRT)",
  CPUExecutionProvider: "CPU",
};

const $ = (id) => document.getElementById(id);

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// The service answers errors as {"error": {"code", "message"}}.
async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadMetadata() {
  const response = await fetch("/metadata", { headers: authHeaders() });
  if (response.status === 401) {
    $("key-box").open = true;
    setStatus("This server needs an API key: paste it below.", true);
    return;
  }
  if (!response.ok) {
    setStatus(`Model not available: ${await errorText(response)}`, true);
    return;
  }
  const meta = await response.json();
  if (sessionStorage.getItem(KEY_STORAGE)) $("key-box").open = false;  // accepted: out of the way
  // A model exported under its own --name shows that name, its variant beside it.
  const named = meta.name && meta.name !== `efficientnet_${meta.variant}`;
  const model = named ? `${meta.name} (${meta.variant})` : meta.variant;
  $("variant").textContent = `${model} · ${meta.label_count} classes · ${meta.resolution}px`;
  $("device").textContent = `${DEVICES[meta.provider] ?? meta.provider} · ${meta.provider}`;
}

function showPredictions(predictions) {
  const list = $("results");
  list.replaceChildren();
  for (const p of predictions) {
    const item = document.createElement("li");
    const percent = (100 * p.score).toFixed(1);
    item.innerHTML = `<div class="row"><span class="label"></span><span class="score"></span></div>
      <div class="bar"><span></span></div>`;
    item.querySelector(".label").textContent = p.label;  // textContent: labels are data, not HTML
    item.querySelector(".score").textContent = `${percent}%`;
    item.querySelector(".bar span").style.width = `${Math.max(0.5, 100 * p.score)}%`;
    item.dataset.index = p.index;
    list.append(item);
  }
}

async function classify(file) {
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-hint").hidden = true;
  $("filename").textContent = file.name;
  $("results").replaceChildren();
  setStatus("Classifying…");

  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    // No top_k: the service's default, 5 or every class of a model with fewer.
    response = await fetch("/classify", {
      method: "POST", body: form, headers: authHeaders(),
    });
  } catch (err) {
    setStatus(`Server unreachable: ${err.message}`, true);
    return;
  }
  if (!response.ok) {
    if (response.status === 401) $("key-box").open = true;
    setStatus(`Rejected (${response.status}): ${await errorText(response)}`, true);
    return;
  }
  const result = await response.json();
  showPredictions(result.predictions);
  const t = result.timing_ms;
  setStatus(`${result.variant}: ${t.total.toFixed(1)} ms (inference ${t.inference.toFixed(1)} ms, ` +
            `batch of ${t.batch_size})`);
}

function wireDropZone() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    classify(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", (e) => classify(e.target.files[0]));
}

function wireKeyForm() {
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) ?? "";
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    setStatus("API key set for this tab.");
    loadMetadata();
  });
  $("key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    setStatus("API key forgotten.");
  });
}

wireDropZone();
wireKeyForm();
loadMetadata();
