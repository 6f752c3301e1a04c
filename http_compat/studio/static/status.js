// The status page: re-read its panel every few seconds and swap it in (server-rendered HTML of
// the same template the page was rendered with). A failed read leaves the last panel, marked.
const panel = document.getElementById("status-panel");
if (panel) {
  const every = Number(panel.dataset.every || 3) * 1000;
  async function refresh() {
    try {
      const response = await fetch(panel.dataset.panel, { headers: { Accept: "text/html" } });
      if (!response.ok) throw new Error(`${response.status}`);
      panel.innerHTML = await response.text();
      panel.classList.remove("stale");
    } catch {
      panel.classList.add("stale");
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
}
