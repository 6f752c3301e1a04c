// The studio's script: what server-rendered pages cannot do alone (live updates, actions, the
// form's field errors). Plain ES module, no build step; every page reads well before it runs.
// Text from runs is only ever set as textContent (prompts are user input), never as HTML.

const prefix = document.body.dataset.prefix || "";

// -- JSON routes ------------------------------------------------------------------------------

async function call(method, url, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = { message: `${response.status} ${response.statusText}` };
  }
  return { ok: response.ok, status: response.status, data };
}

// -- cards (the same markup as templates/_card.html) ------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const ACTIVE = new Set(["queued", "running"]);

function cardElement(card) {
  const thumb = element("span", { class: "thumb" });
  if (card.thumbnails.length) {
    thumb.append(element("img", { src: card.thumbnails[0], alt: card.prompt, loading: "lazy", width: 384, height: 384 }));
  } else {
    thumb.append(element("span", { class: "placeholder", "aria-hidden": "true" }, card.kind));
  }
  if (card.image_count > 1) thumb.append(element("span", { class: "count" }, `${card.image_count} images`));
  const bar = element("progress", { max: 1, value: card.progress, "aria-label": `Progress of ${card.prompt}` });
  bar.textContent = `${Math.round(card.progress * 100)}%`;
  bar.hidden = !ACTIVE.has(card.status);
  return element(
    "li",
    {
      class: "card",
      "data-run": card.id,
      "data-status": card.status,
      "data-kind": card.kind,
      "data-backend": card.backend,
      "data-created": card.created_at,
    },
    element("a", { href: card.url }, thumb, element("span", { class: "prompt" }, card.prompt)),
    element(
      "span",
      { class: "meta" },
      element("span", { class: `status status-${card.status}` }, card.status),
      " ",
      element("span", { class: "kind" }, `${card.kind} · ${card.backend}`),
    ),
    bar,
  );
}

function cardOf(id) {
  return document.querySelector(`li.card[data-run="${CSS.escape(id)}"]`);
}

function showProgress(id, progress) {
  const bar = cardOf(id)?.querySelector("progress");
  if (bar) {
    bar.value = progress;
    bar.textContent = `${Math.round(progress * 100)}%`;
    bar.hidden = false;
  }
}

// -- the one live channel ---------------------------------------------------------------------

// Opens the page's EventSource; `handlers.<event name>` take the events' data.
function live(url, handlers) {
  const source = new EventSource(url);
  // Changes made between the page's rendering and the channel's opening (or while it was down)
  // were never sent: `connected` re-reads what the page shows, each time the channel opens.
  source.addEventListener("hello", () => {
    document.body.dataset.live = "on";
    handlers.connected?.();
  });
  for (const name of ["run", "progress", "deleted"]) {
    source.addEventListener(name, (event) => handlers[name]?.(JSON.parse(event.data)));
  }
  source.addEventListener("error", () => {
    document.body.dataset.live = source.readyState === EventSource.CLOSED ? "off" : "retrying";
  });
  return source;
}

// -- gallery ----------------------------------------------------------------------------------

function setUpGallery(grid) {
  const filters = new URLSearchParams(grid.dataset.filters || "");
  const empty = document.getElementById("gallery-empty");
  const more = document.getElementById("load-more");

  const matches = (card) =>
    !card.parent_id &&
    ["status", "kind", "backend"].every((name) => !filters.get(name) || filters.get(name) === card[name]);

  // Put a card where newest-first order puts it; one older than every loaded card waits for
  // "Load more" when there are more pages, so nothing is shown twice or out of order.
  function place(card) {
    const existing = cardOf(card.id);
    if (existing) {
      existing.replaceWith(cardElement(card));
      return;
    }
    if (!matches(card)) return;
    const after = [...grid.querySelectorAll("li.card")].find((li) => Number(li.dataset.created) < card.created_at);
    if (after) after.before(cardElement(card));
    else if (!grid.dataset.next) grid.append(cardElement(card));
    else return;
    empty.hidden = true;
  }

  async function loadMore() {
    const cursor = grid.dataset.next;
    if (!cursor || grid.dataset.loading) return;
    grid.dataset.loading = "1";
    const query = new URLSearchParams(filters);
    query.set("cursor", cursor);
    const { ok, data } = await call("GET", `${grid.dataset.page}?${query}`);
    delete grid.dataset.loading;
    if (!ok) return;
    for (const card of data.cards) {
      if (!cardOf(card.id)) grid.append(cardElement(card));
    }
    if (data.next_cursor) grid.dataset.next = data.next_cursor;
    else {
      delete grid.dataset.next;
      more?.closest(".more")?.remove();
    }
  }

  if (more) {
    more.addEventListener("click", (event) => {
      event.preventDefault();
      loadMore();
    });
    // Infinite scroll: the next page is fetched as the button comes into view.
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadMore();
    }, { rootMargin: "400px" }).observe(more);
  }

  live(grid.dataset.live, {
    run: place,
    progress: (p) => showProgress(p.id, p.progress),
    deleted: ({ id }) => {
      cardOf(id)?.remove();
      empty.hidden = grid.querySelector("li.card") !== null;
    },
    connected: async () => {
      const { ok, data } = await call("GET", `${grid.dataset.page}?${filters}`);
      if (ok) data.cards.forEach(place);
    },
  });

  const form = document.getElementById("filters");
  form?.addEventListener("change", () => form.requestSubmit());
}

// -- run page ---------------------------------------------------------------------------------

function setUpRunPage(main) {
  let article = document.getElementById("run");
  const runId = article.dataset.run;
  const api = article.dataset.api;
  let refreshing = null;
  let stale = false;

  // Re-read the page and put its new <main> in place: the server renders it, so a finished
  // run's images, log and buttons look exactly as on a fresh load. Asked for again while a
  // read is under way (the run changed meanwhile), it reads once more after it.
  async function load() {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (response.ok) {
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      main.replaceChildren(...[...fresh.querySelector("main").childNodes].map((n) => document.importNode(n, true)));
      article = document.getElementById("run");
    }
  }

  async function refresh() {
    if (refreshing) {
      stale = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        stale = false;
        await load();
      } while (stale);
    })();
    try {
      await refreshing;
    } finally {
      refreshing = null;
    }
  }

  function problem(message) {
    const where = document.getElementById("action-error");
    where.textContent = message;
    where.hidden = false;
  }

  async function act(action, button) {
    button.disabled = true;
    try {
      if (action === "delete") {
        if (!(await confirmDelete())) return;
        const { ok, data } = await call("DELETE", api);
        if (ok) location.assign(`${prefix}/`);
        else problem(data.message);
        return;
      }
      const { ok, data } = await call("POST", `${api}/${action}`);
      if (!ok) problem(data.message);
      else if (action === "again") location.assign(data.url);
      else await refresh();
    } finally {
      button.disabled = false;
    }
  }

  function confirmDelete() {
    const dialog = document.getElementById("confirm-delete");
    if (!dialog?.showModal) return Promise.resolve(confirm("Delete this run and its images for good?"));
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  main.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button.dataset.action, button);
  });

  live(article.dataset.live, {
    run: (card) => {
      if (card.id === runId) {
        if (card.status !== article.dataset.status) refresh();
        else showRunProgress(card);
      } else if (cardOf(card.id)) {
        cardOf(card.id).replaceWith(cardElement(card));
      }
    },
    progress: (p) => {
      if (p.id === runId) showRunProgress(p);
      else showProgress(p.id, p.progress);
    },
    deleted: ({ id }) => {
      if (id === runId) problem("This run was deleted.");
      else cardOf(id)?.remove();
    },
    connected: () => {
      if (article.dataset.status === "queued" || article.dataset.status === "running") refresh();
    },
  });
}

function showRunProgress(p) {
  const line = document.getElementById("run-progress");
  if (!line) return;
  const bar = line.querySelector("progress");
  bar.value = p.progress;
  bar.textContent = `${Math.round(p.progress * 100)}%`;
  const step = document.getElementById("run-step");
  if (p.max_steps) step.textContent = `step ${p.step} of ${p.max_steps}${p.message ? ` · ${p.message}` : ""}`;
}

// -- generate form ----------------------------------------------------------------------------

function setUpGenerate(form) {
  const size = form.querySelector("#size");
  const width = form.querySelector("#width");
  const height = form.querySelector("#height");
  const workflow = form.querySelector("#workflow");
  const about = form.querySelector("#workflow-about");
  const formError = document.getElementById("form-error");
  const submit = form.querySelector("#generate-submit");

  function showOperation() {
    const operation = form.querySelector("input[name=operation]:checked")?.value || "txt2img";
    for (const op of ["txt2img", "img2img", "upscale"]) form.classList.toggle(`op-${op}`, op === operation);
    for (const option of workflow.options) {
      option.hidden = Boolean(option.dataset.operation) && option.dataset.operation !== operation;
    }
  }
  form.addEventListener("change", (event) => {
    if (event.target.name === "operation") showOperation();
  });
  showOperation();

  size.addEventListener("change", () => {
    const [w, h] = size.value.split("x");
    if (h) {
      width.value = w;
      height.value = h;
    }
  });
  for (const input of [width, height]) input.addEventListener("input", () => (size.value = "custom"));

  const showAbout = () => {
    if (workflow.selectedOptions[0]?.dataset.about) about.textContent = workflow.selectedOptions[0].dataset.about;
  };
  workflow.addEventListener("change", showAbout);
  showAbout();

  function clearErrors() {
    formError.hidden = true;
    for (const error of form.querySelectorAll(".field-error")) {
      error.hidden = true;
      error.textContent = "";
    }
    for (const input of form.querySelectorAll("[aria-invalid]")) {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  }

  function showErrors(data) {
    const unplaced = [];
    let first = null;
    for (const { field, message } of data.problems || [{ field: data.field, message: data.message }]) {
      const name = String(field || "").split(/[.[]/)[0];
      const where = name && form.querySelector(`#${CSS.escape(name)}-error`);
      if (!where || !where.hidden) {
        if (!where) unplaced.push(`${field}: ${message}`);
        continue;
      }
      where.textContent = `${field}: ${message}`;
      where.hidden = false;
      const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", where.id);
        first ??= input;
      }
    }
    if (unplaced.length) {
      formError.textContent = unplaced.join("; ");
      formError.hidden = false;
    }
    (first || formError).focus?.();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const fields = {};
    for (const [name, value] of new FormData(form)) fields[name] = value;
    submit.disabled = true;
    try {
      const { ok, data } = await call("POST", form.dataset.api, fields);
      if (ok) location.assign(data.url);
      else if (data.problems || data.field) showErrors(data);
      else {
        formError.textContent = data.message;
        formError.hidden = false;
      }
    } catch (error) {
      formError.textContent = `Atelier could not be reached (${error.message}); try again.`;
      formError.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
}

// -- start ------------------------------------------------------------------------------------

const grid = document.getElementById("gallery");
if (grid) setUpGallery(grid);
const run = document.getElementById("run");
if (run) setUpRunPage(document.getElementById("main"));
const generate = document.getElementById("generate");
if (generate) setUpGenerate(generate);
