// The gallery: more pages as it is scrolled, and every run's changes as they happen, without a reload.

import { call, cardElement, cardOf, live, showProgress } from "./studio.js";

export function start(grid) {
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
