// The studio's script: what server-rendered pages cannot do alone (live updates, actions, the
// form's field errors). Plain ES modules, no build step; every page reads well before they run.
// Text from runs is only ever set as textContent (prompts are user input), never as HTML.
// This module holds what pages share (JSON calls, cards, the live channel) and loads the
// module of the page it is on: gallery.js, run.js or generate.js.

export const prefix = document.body.dataset.prefix || "";

// -- JSON routes ------------------------------------------------------------------------------

export async function call(method, url, body) {
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

export function element(tag, attributes = {}, ...children) {
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

export function cardElement(card) {
  const thumb = element("span", { class: "thumb" });
  if (card.thumbnails.length) {
    thumb.append(element("img", { src: card.thumbnails[0], alt: card.prompt, loading: "lazy", width: 384, height: 384 }));
  } else {
    thumb.append(element("span", { class: "placeholder", "aria-hidden": "true" }, card.placeholder));
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

export function cardOf(id) {
  return document.querySelector(`li.card[data-run="${CSS.escape(id)}"]`);
}

export function showProgress(id, progress) {
  const bar = cardOf(id)?.querySelector("progress");
  if (bar) {
    bar.value = progress;
    bar.textContent = `${Math.round(progress * 100)}%`;
    bar.hidden = false;
  }
}

// -- the one live channel ---------------------------------------------------------------------

// Opens the page's EventSource; `handlers.<event name>` take the events' data.
export function live(url, handlers) {
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

// -- start ------------------------------------------------------------------------------------

const pages = { gallery: "./gallery.js", run: "./run.js", generate: "./generate.js" };
for (const [id, module] of Object.entries(pages)) {
  const root = document.getElementById(id);
  if (root) import(module).then((page) => page.start(root));
}
