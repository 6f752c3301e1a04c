// A run's page: its buttons, and the run followed live until it ends.

import { call, cardElement, cardOf, live, prefix, showProgress } from "./studio.js";

export function start(root) {
  const main = root.closest("main");
  let article = root;
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
