"use strict";
const $ = (s, e = document) => e.querySelector(s);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const k of kids) e.append(k);
  return e;
};
// The coder id is remembered between visits; the API token is not: it stays in this page's
// memory only, so nothing else that runs in the browser can read it back later.
{
  const coder = $("#coder");
  coder.value = localStorage.getItem("isco-coder") || "";
  coder.addEventListener("change", () => localStorage.setItem("isco-coder", coder.value));
  localStorage.removeItem("isco-token");
}
const pct = (p) => (100 * p).toFixed(1) + " %";

function highlight(words) {
  const max = Math.max(0.001, ...words.map((w) => Math.abs(w.contribution)));
  const box = el("div", { class: "words" });
  for (const w of words) {
    const a = Math.min(1, Math.abs(w.contribution) / max);
    const color = w.contribution >= 0 ? `rgba(42,157,143,${a * 0.6})` : `rgba(230,57,70,${a * 0.4})`;
    const s = el("span", { title: w.contribution.toFixed(3) }, w.word);
    s.style.background = color;
    box.append(s, " ");
  }
  return box;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + $("#token").value },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) {
    let msg = text;
    try { msg = JSON.parse(text).error; } catch (_) {}
    throw new Error(msg);
  }
  return text;
}

function card(item) {
  const status = el("span", { class: "status" });
  const chosen = { code: null };
  const submit = el("button", { class: "submit", disabled: true }, "Submit");
  const choose = (code, button) => {
    chosen.code = code;
    for (const b of c.querySelectorAll(".chosen")) b.classList.remove("chosen");
    button.classList.add("chosen");
    submit.disabled = false;
    submit.textContent = "Submit " + code;
  };
  const suggestions = el("div", { class: "suggestions" });
  for (const s of item.suggestions) {
    const b = el("button", { class: "suggest", "data-code": s.isco_code }, `${s.isco_code} ${s.title} (${pct(s.confidence)})`);
    b.addEventListener("click", () => choose(s.isco_code, b));
    suggestions.append(b);
  }
  // Past records with similar titles: one click takes their code.
  const similar = el("div", { class: "similar" });
  if (item.similar && item.similar.length) similar.append(el("span", { class: "meta" }, "Similar past records: "));
  for (const s of item.similar || []) {
    const label = `${s.text} → ${s.isco_code} ${s.title}` + (s.source === "reference" ? " (ISCO)" : "");
    const b = el("button", { class: "pick similar-record", "data-code": s.isco_code, title: `${s.title} · similarity ${s.similarity.toFixed(2)}` }, label);
    b.addEventListener("click", () => choose(s.isco_code, b));
    similar.append(b);
  }
  const search = el("input", { class: "search", placeholder: "Search an occupation, ISCO title or code…", type: "search" });
  const results = el("div", { class: "results" });
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      results.replaceChildren();
      if (!search.value.trim()) return;
      const hits = await (await fetch("/review/search?q=" + encodeURIComponent(search.value))).json();
      for (const h of hits) {
        const why = h.matched === "model" ? ` (model ${pct(h.confidence)})` : h.matched === "definition" ? " (in its definition)" : "";
        const b = el("button", { class: "pick", "data-code": h.isco_code, "data-matched": h.matched }, `${h.isco_code} ${h.title}${why}`);
        b.addEventListener("click", () => choose(h.isco_code, b));
        results.append(b);
      }
      if (!hits.length) results.append("No match.");
    }, 150);
  });
  submit.addEventListener("click", async () => {
    if (!$("#coder").value.trim()) { status.textContent = "Enter your coder id first."; status.className = "status err"; return; }
    submit.disabled = true;
    try {
      await post("/review/decision", { item_id: item.id, isco_code: chosen.code, coder: $("#coder").value.trim() });
      status.textContent = "Saved " + chosen.code + "."; status.className = "status ok";
      c.setAttribute("data-done", "true");
      setTimeout(() => { c.remove(); refreshCount(-1); }, 600);
    } catch (e) {
      status.textContent = e.message; status.className = "status err"; submit.disabled = false;
    }
  });
  const skip = el("button", { class: "skip" }, "Skip");
  skip.addEventListener("click", async () => {
    try { await post("/review/skip", { item_id: item.id }); c.remove(); refreshCount(-1); }
    catch (e) { status.textContent = e.message; status.className = "status err"; }
  });
  const c = el("section", { class: "item", "data-item": item.id },
    el("h2", {}, item.job_title || "(no title)"),
    el("p", { class: "duties" }, item.duties_description || "(no duties)"),
    el("p", { class: "meta" }, `Model said ${item.predicted_isco_code || "?"} ${item.predicted_title} at ${pct(item.predicted_confidence)} · ${item.source}`),
    highlight(item.highlights),
    el("p", { class: "meta" }, `Suggestions decided by: ${item.suggested_by}`),
    suggestions,
    similar,
    el("div", {}, search, results),
    el("div", {}, submit, skip, status));
  return c;
}

let total = 0;
function refreshCount(delta) {
  total += delta;
  $("#count").textContent = total + " to review";
  $("#empty").hidden = total > 0;
}

async function load() {
  const r = await fetch("/review/queue?limit=50");
  if (!r.ok) { $("#queue").textContent = (await r.json()).error; return; }
  const q = await r.json();
  $("#queue").replaceChildren(...q.items.map(card));
  total = q.total; refreshCount(0);
  document.body.setAttribute("data-loaded", "true");
}
load();
