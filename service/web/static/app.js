// likeness web page: Compare, Search, Gallery and Model, talking to the service's JSON API.
// Plain browser JavaScript, no build step and no dependencies.
"use strict";

(() => {
  const KEY_STORAGE = "likeness.apiKey";
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // API access: the API key (sessionStorage), errors as readable text, 401/403 -> ask and retry.

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
    } catch { /* storage disabled: the key lives only as long as the input */ }
    $("key-state").textContent = key ? "(set)" : "(none)";
  }

  /** The `detail` of an error body as one readable sentence. */
  async function errorMessage(response) {
    let text = "";
    try { text = await response.text(); } catch { /* the body is gone */ }
    try {
      const body = JSON.parse(text);
      if (typeof body.detail === "string" && body.detail) return body.detail;
      if (Array.isArray(body.detail)) {
        return body.detail.map((d) => (d && d.msg) || String(d)).join("; ");
      }
    } catch { /* not JSON */ }
    text = text.trim();
    if (text && text.length < 300 && !text.startsWith("<")) return text;
    return `the service answered ${response.status} ${response.statusText}`.trim();
  }

  let keyRequest = null; // {promise, resolve, reject} while the page is waiting for a key

  function askForKey(message) {
    const area = $("key-area");
    $("key-prompt").textContent = message;
    $("key-prompt").className = "message error";
    area.classList.add("asking");
    area.open = true;
    const input = $("api-key");
    input.select();
    input.focus();
    if (!keyRequest) {
      let resolve, reject;
      const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
      keyRequest = { promise, resolve, reject };
    }
    return keyRequest.promise;
  }

  function finishKeyRequest(error) {
    const request = keyRequest;
    keyRequest = null;
    $("key-area").classList.remove("asking");
    $("key-prompt").textContent = "";
    if (request) { if (error) request.reject(error); else request.resolve(); }
  }

  /** fetch() with the API key; answers the response if ok, else throws ApiError(detail). */
  async function api(path, options = {}) {
    for (;;) {
      const headers = new Headers(options.headers || {});
      const key = storedKey();
      if (key) headers.set("X-API-Key", key);
      let response;
      try {
        response = await fetch(path, { ...options, headers });
      } catch (err) {
        throw new ApiError(0, `the service could not be reached (${err.message})`);
      }
      if (response.status === 401 || response.status === 403) {
        const detail = await errorMessage(response);
        const why = response.status === 403 ? "The API key was not accepted" : "This needs an API key";
        await askForKey(`${why}: ${detail}. Enter it to continue.`); // rejects when cancelled
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
      return response;
    }
  }

  async function apiJson(path, options) {
    return (await api(path, options)).json();
  }

  /** Path of an item's thumbnail; ids may hold "/" or any other character. */
  function thumbnailPath(id) {
    return `/items/${encodeURIComponent(id)}/thumbnail`;
  }

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function say(id, text, kind = "") {
    const node = $(id);
    node.textContent = text;
    node.className = `message ${kind}`.trim();
  }

  function fail(id, err) {
    const message = err instanceof Error ? err.message : String(err);
    say(id, `Error: ${message}`, "error");
  }

  const fmt = (x, digits = 4) => Number(x).toFixed(digits);
  const percent = (p) => `${(100 * p).toFixed(1)} %`;

  /** Run `work` with a button disabled and busy; ignore answers overtaken by a newer run. */
  function runner(button) {
    let generation = 0;
    return async (work) => {
      const mine = ++generation;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        return await work(() => mine === generation);
      } finally {
        if (mine === generation) {
          button.disabled = false;
          button.removeAttribute("aria-busy");
        }
      }
    };
  }

  const previews = new Map(); // img element -> object URL to revoke

  function showPreview(img, blob) {
    if (previews.has(img)) URL.revokeObjectURL(previews.get(img));
    if (!blob) { img.hidden = true; img.removeAttribute("src"); previews.delete(img); return; }
    const url = URL.createObjectURL(blob);
    previews.set(img, url);
    img.src = url;
    img.hidden = false;
  }

  /** Dropping files on a zone puts them into its file input, so the input stays the one source. */
  function dropZone(zone) {
    const input = $(zone.dataset.dropFor);
    const over = (on) => (event) => { event.preventDefault(); zone.classList.toggle("over", on); };
    zone.addEventListener("dragenter", over(true));
    zone.addEventListener("dragover", over(true));
    zone.addEventListener("dragleave", over(false));
    zone.addEventListener("drop", (event) => {
      over(false)(event);
      const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
      if (!files.length) return;
      const transfer = new DataTransfer();
      for (const file of input.multiple ? files : files.slice(0, 1)) transfer.items.add(file);
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Model

  let model = null;

  function aspectNames() {
    const aspects = (model && model.spec && model.spec.aspects) || [];
    return aspects.map((a) => (typeof a === "string" ? a : a.name)).filter(Boolean);
  }

  function fillAspectSelects() {
    const names = aspectNames();
    for (const id of ["compare-aspect", "search-aspect"]) {
      const select = $(id);
      const current = select.value;
      select.replaceChildren(el("option", { value: "", text: "Overall" }),
        ...names.map((n) => el("option", { value: n, text: n })));
      select.value = names.includes(current) ? current : "";
    }
    for (const node of document.querySelectorAll(".aspect-only")) node.hidden = names.length === 0;
  }

  async function loadModel() {
    try {
      model = await apiJson("/model");
    } catch (err) {
      fail("model-message", err);
      return;
    }
    say("model-message", "");
    const { spec = {}, provider = {}, index = {} } = model;
    const names = aspectNames();
    const threshold = spec.decision && spec.decision.threshold;
    const facts = [
      ["Name", spec.name, "model-name"],
      ["Version", spec.version, "model-version"],
      ["Provider", provider.active, "model-provider"],
      ["Device", provider.device, "model-device"],
      ["Why this provider", provider.reason, "model-reason"],
      ["Embedding dimension", spec.embedding_dim, "model-dim"],
      ["Aspects", names.length ? names.join(", ") : "none (overall similarity only)", "model-aspects"],
      ["Decision threshold", threshold == null ? "" : fmt(threshold), "model-threshold"],
      ["Index size", index.items == null ? "" : `${index.items} items`, "model-index-items"],
      ["Index type", index.type, "model-index-type"],
    ];
    $("model-info").replaceChildren(...facts.flatMap(([name, value, testid]) => [
      el("dt", { text: name }),
      el("dd", { text: value == null || value === "" ? "—" : String(value), "data-testid": testid }),
    ]));
    fillAspectSelects();
  }

  // ---------------------------------------------------------------------------------------------
  // Compare

  const compareRun = runner($("compare-button"));

  function renderAspectBars(result) {
    const box = $("compare-aspects");
    const entries = Object.entries(result.aspects || {});
    box.hidden = entries.length === 0;
    const decisions = (model && model.spec && model.spec.aspect_decisions) || {};
    box.replaceChildren(...entries.map(([name, score]) => {
      const fill = el("div", { className: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      const bar = el("div", { className: "bar", "aria-hidden": "true" }, fill);
      const threshold = decisions[name] && decisions[name].threshold;
      if (typeof threshold === "number") {
        const tick = el("div", { className: "bar-threshold", title: `threshold ${fmt(threshold)}` });
        tick.style.left = `${Math.max(0, Math.min(1, threshold)) * 100}%`;
        bar.append(tick);
      }
      return el("div", {
        className: `bar-row${result.aspect === name ? " selected" : ""}`, role: "group",
        "aria-label": `${name}: cosine ${fmt(score)}`, "data-testid": "aspect-bar", "data-aspect": name,
      },
      el("span", { className: "bar-name", text: name }), bar,
      el("span", { className: "bar-value", text: fmt(score) }));
    }));
  }

  async function compare() {
    const a = $("compare-a").files[0];
    const b = $("compare-b").files[0];
    if (!a || !b) {
      say("compare-message", "Choose two images first.", "error");
      return;
    }
    const form = new FormData();
    form.append("image_a", a);
    form.append("image_b", b);
    const aspect = $("compare-aspect").value;
    if (aspect) form.append("aspect", aspect);
    say("compare-message", "Comparing…");
    await compareRun(async (current) => {
      try {
        const result = await apiJson("/similarity", { method: "POST", body: form });
        if (!current()) return;
        $("compare-score").textContent = fmt(result.score);
        $("compare-score-aspect").textContent = result.aspect ? ` (${result.aspect})` : "";
        const decision = $("compare-decision");
        const word = result.same ? "Same" : "Different";
        decision.replaceChildren(
          el("strong", { className: result.same ? "same" : "different", text: word }),
          ` — score ${fmt(result.score)} is ${result.same ? "at or above" : "below"} the threshold ${fmt(result.threshold)}`);
        $("compare-probability").textContent = percent(result.probability);
        const copy = $("compare-copy");
        copy.hidden = result.near_duplicate === null || result.near_duplicate === undefined;
        if (!copy.hidden) {
          copy.textContent = result.near_duplicate
            ? `The same image (same-image score ${fmt(result.near_duplicate_score)} ≥ ${fmt(result.near_duplicate_threshold)}).`
            : `Not the same image (same-image score ${fmt(result.near_duplicate_score)} < ${fmt(result.near_duplicate_threshold)}).`;
        }
        renderAspectBars(result);
        $("compare-result").hidden = false;
        say("compare-message", `Compared with ${result.model.name} ${result.model.version}.`, "ok");
      } catch (err) {
        if (current()) fail("compare-message", err);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Search

  const searchRun = runner($("search-button"));
  let searchQuery = null; // {blob, name}: the file picked, dropped, or a result's thumbnail
  let resultUrls = [];

  function setSearchQuery(blob, name) {
    searchQuery = blob ? { blob, name } : null;
    showPreview($("search-preview"), blob);
    $("search-query-name").textContent = blob ? `Query: ${name}` : "";
  }

  function thumbnailInto(img, id) {
    img.addEventListener("error", () => { img.classList.add("missing"); img.alt = `no thumbnail for ${id}`; },
      { once: true });
    if (!storedKey()) {
      img.src = thumbnailPath(id);
      return;
    }
    // With an API key, an <img src> cannot send the header: fetch the thumbnail instead.
    api(thumbnailPath(id))
      .then((response) => response.blob())
      .then((blob) => { const url = URL.createObjectURL(blob); resultUrls.push(url); img.src = url; })
      .catch(() => { img.classList.add("missing"); img.alt = `no thumbnail for ${id}`; });
  }

  function resultCard(hit, rank) {
    const img = el("img", { alt: "", width: 128, height: 128, decoding: "async" });
    thumbnailInto(img, hit.id);
    const meta = el("span", { className: "card-meta" },
      ...Object.entries(hit.metadata || {}).map(([key, value]) =>
        el("span", { text: `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}` })));
    const button = el("button", {
      type: "button", className: "card", "data-testid": "result-card", "data-id": hit.id,
      "data-rank": rank, title: `Search with ${hit.id}`,
    },
    img,
    el("span", { className: "card-id", "data-testid": "result-id", text: hit.id }),
    el("span", { className: "card-score", "data-testid": "result-score", text: `score ${fmt(hit.score)}` }),
    ...(hit.near_duplicate ? [el("span", { className: "card-copy", "data-testid": "result-copy", text: "same image" })] : []),
    meta);
    button.addEventListener("click", () => searchWithItem(hit.id));
    return el("li", {}, button);
  }

  function renderResults(results) {
    for (const url of resultUrls) URL.revokeObjectURL(url);
    resultUrls = [];
    $("search-results").replaceChildren(...results.map((hit, i) => resultCard(hit, i + 1)));
  }

  async function search() {
    if (!searchQuery) {
      say("search-message", "Choose a query image first.", "error");
      return;
    }
    const k = Number($("search-k").value || 10);
    if (!Number.isInteger(k) || k < 1) {
      say("search-message", "k must be a whole number of at least 1.", "error");
      return;
    }
    const form = new FormData();
    form.append("image", searchQuery.blob, searchQuery.name);
    form.append("k", String(k));
    const aspect = $("search-aspect").value;
    if (aspect) form.append("aspect", aspect);
    const filter = $("search-filter").value.trim();
    if (filter) form.append("filter", filter);
    say("search-message", "Searching…");
    await searchRun(async (current) => {
      try {
        const result = await apiJson("/search", { method: "POST", body: form });
        if (!current()) return;
        renderResults(result.results);
        const n = result.results.length;
        const space = result.aspect ? ` on the ${result.aspect} aspect` : "";
        say("search-message", n
          ? `${n} result${n === 1 ? "" : "s"} for ${searchQuery.name}${space}, best first.`
          : `No items matched${filter ? " the filter" : ""}.`, "ok");
      } catch (err) {
        if (current()) fail("search-message", err);
      }
    });
  }

  async function searchWithItem(id) {
    say("search-message", `Searching with ${id}…`);
    try {
      const blob = await (await api(thumbnailPath(id))).blob();
      setSearchQuery(blob, id);
      $("search-file").value = "";
    } catch (err) {
      fail("search-message", err);
      return;
    }
    await search();
    // The clicked card is gone; keep keyboard users in the results.
    const first = document.querySelector("#search-results .card");
    if (first) first.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Gallery: add and delete

  const addRun = runner($("add-button"));
  const deleteRun = runner($("delete-button"));

  function renderAddRows() {
    const files = [...$("add-files").files];
    $("add-rows").replaceChildren(...files.map((file, i) => {
      const img = el("img", { alt: "" });
      showPreview(img, file);
      const stem = file.name.replace(/\.[^.]+$/, "") || file.name;
      return el("fieldset", { className: "add-row", "data-testid": "add-row" },
        el("legend", { text: file.name }),
        img,
        el("div", { className: "add-fields" },
          el("label", { for: `add-id-${i}`, text: "Id" }),
          el("input", { id: `add-id-${i}`, type: "text", value: stem, spellcheck: "false", autocomplete: "off",
            "data-testid": "add-id" }),
          el("label", { for: `add-meta-${i}`, text: "Metadata (JSON object, optional)" }),
          el("input", { id: `add-meta-${i}`, type: "text", spellcheck: "false", autocomplete: "off",
            placeholder: '{"class": "dress"}', "data-testid": "add-metadata" })));
    }));
  }

  async function addItems() {
    const files = [...$("add-files").files];
    if (!files.length) {
      say("add-message", "Choose one or more images first.", "error");
      return;
    }
    const ids = files.map((_, i) => $(`add-id-${i}`).value.trim());
    const metas = files.map((_, i) => $(`add-meta-${i}`).value.trim());
    const missing = ids.findIndex((id) => !id);
    if (missing >= 0) {
      say("add-message", `Give ${files[missing].name} an id.`, "error");
      $(`add-id-${missing}`).focus();
      return;
    }
    const form = new FormData();
    files.forEach((file, i) => { form.append("image", file); form.append("id", ids[i]); });
    if (metas.some(Boolean)) for (const meta of metas) form.append("metadata", meta || "{}");
    say("add-message", `Adding ${files.length} image${files.length === 1 ? "" : "s"}…`);
    await addRun(async () => {
      try {
        const result = await apiJson("/items", { method: "POST", body: form });
        say("add-message", `Added ${result.added} item${result.added === 1 ? "" : "s"}: ${result.ids.join(", ")}.`,
          "ok");
        $("add-files").value = "";
        renderAddRows();
        loadModel();
      } catch (err) {
        fail("add-message", err);
      }
    });
  }

  async function deleteItem() {
    const id = $("delete-id").value.trim();
    if (!id) {
      say("delete-message", "Enter the id of the item to delete.", "error");
      return;
    }
    await deleteRun(async () => {
      try {
        const result = await apiJson(`/items/${encodeURIComponent(id)}`, { method: "DELETE" });
        say("delete-message", `Deleted ${result.deleted}.`, "ok");
        $("delete-id").value = "";
        loadModel();
      } catch (err) {
        fail("delete-message", err);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Duplicates

  const duplicatesRun = runner($("duplicates-button"));
  let duplicatesNext = null;

  function groupCard(group) {
    const members = group.ids.map((id) => {
      const img = el("img", { alt: id, width: 96, height: 96, decoding: "async" });
      thumbnailInto(img, id);
      return el("figure", { className: "member", "data-testid": "duplicate-member", "data-id": id },
        img, el("figcaption", { text: id }));
    });
    const dismiss = el("button", { type: "button", className: "secondary", "data-testid": "duplicate-dismiss",
      text: "Not the same" });
    const item = el("li", { className: "group", "data-testid": "duplicate-group" },
      el("p", { className: "muted small", text: `${group.ids.length} items · same-image score ≥ ${fmt(group.score)}` }),
      el("div", { className: "members" }, ...members),
      ...(group.ids.length === 2 ? [dismiss] : []));
    dismiss.addEventListener("click", async () => {
      try {
        await apiJson("/duplicates/dismiss", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids: group.ids }),
        });
        item.remove();
        say("duplicates-message", `${group.ids.join(" and ")} are kept apart from now on.`, "ok");
      } catch (err) {
        fail("duplicates-message", err);
      }
    });
    return item;
  }

  async function findDuplicates(more = false) {
    say("duplicates-message", "Looking for duplicates…");
    await duplicatesRun(async (current) => {
      try {
        const query = more && duplicatesNext ? `?after=${encodeURIComponent(duplicatesNext)}` : "";
        const page = await apiJson(`/duplicates${query}`);
        if (!current()) return;
        const cards = page.groups.map(groupCard);
        if (more) $("duplicates-groups").append(...cards);
        else $("duplicates-groups").replaceChildren(...cards);
        duplicatesNext = page.next;
        $("duplicates-more").hidden = !page.next;
        const shown = $("duplicates-groups").children.length;
        say("duplicates-message", shown ? `${shown} group${shown === 1 ? "" : "s"} of the same image${page.next ? " so far" : ""}.`
          : "No two items are the same image.", "ok");
      } catch (err) {
        if (current()) fail("duplicates-message", err);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  function onSubmit(id, handler) {
    $(id).addEventListener("submit", (event) => { event.preventDefault(); handler(); });
  }

  document.querySelectorAll(".drop").forEach(dropZone);
  // Dropping a file anywhere else must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  for (const side of ["a", "b"]) {
    $(`compare-${side}`).addEventListener("change", (event) =>
      showPreview($(`compare-${side}-preview`), event.target.files[0]));
  }
  $("compare-aspect").addEventListener("change", () => {
    if (!$("compare-result").hidden) compare();
  });
  onSubmit("compare-form", compare);

  $("search-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    setSearchQuery(file || null, file ? file.name : "");
  });
  onSubmit("search-form", search);
  onSubmit("duplicates-form", () => findDuplicates(false));
  $("duplicates-more").addEventListener("click", () => findDuplicates(true));

  $("add-files").addEventListener("change", renderAddRows);
  onSubmit("add-form", addItems);
  onSubmit("delete-form", deleteItem);

  onSubmit("key-form", () => {
    const key = $("api-key").value.trim();
    if (!key) {
      say("key-prompt", "Enter a key, or choose Forget.", "error");
      return;
    }
    storeKey(key);
    $("api-key").value = "";
    $("key-area").open = false;
    finishKeyRequest();
  });
  $("key-area").addEventListener("toggle", () => {
    if (!$("key-area").open && keyRequest) {
      finishKeyRequest(new ApiError(401, "no API key was given, so the request was not sent again"));
    }
  });
  $("key-forget").addEventListener("click", () => {
    storeKey("");
    $("api-key").value = "";
    $("key-area").open = false;
    finishKeyRequest(new ApiError(401, "no API key was given, so the request was not sent again"));
  });

  storeKey(storedKey());
  loadModel();
})();
