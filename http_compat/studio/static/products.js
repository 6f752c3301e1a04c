// A product's page: publish (after the confirmation dialog) or unpublish, follow the run on the
// live channel, then show the product's listings as they are now.
import { clearErrors, element, send, showErrors } from "./fields.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const root = document.getElementById("product");
if (root) productPage(root);

function productPage(root) {
  const form = document.getElementById("publish");
  const dialog = document.getElementById("publish-dialog");
  const status = document.getElementById("publish-status");
  const seen = new Map(); // run id -> its latest card, for a run that ends before its POST answers
  let following = "";
  let doing = "";

  const chosen = () => [...form.querySelectorAll('input[name="platforms"]:checked')].map((box) => box.value);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const platforms = chosen();
    if (!platforms.length) {
      showErrors(form, { problems: [{ field: "platforms", message: "Choose at least one platform." }] });
      return;
    }
    clearErrors(form);
    document.getElementById("publish-dialog-platforms").textContent = platforms.join(", ");
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "publish") submit("publish", { confirm: true });
  });
  document.getElementById("unpublish-button").addEventListener("click", () => submit("unpublish", {}));

  async function submit(action, extra) {
    const answer = await send("POST", form.dataset.action, { platforms: chosen(), action, ...extra });
    if (!answer.ok) {
      showErrors(form, answer.data);
      return;
    }
    clearErrors(form);
    following = answer.data.id;
    doing = `${action === "publish" ? "Published" : "Unpublished"} on ${chosen().join(", ")}.`;
    status.textContent = `${action === "publish" ? "Publishing" : "Unpublishing"}…`;
    const known = seen.get(following);
    if (known && FINAL.has(known.status)) finished(known);
  }

  async function finished(run) {
    following = "";
    status.textContent = run.status === "completed" ? doing : `The run ${run.status}${run.error ? `: ${run.error}` : "."}`;
    const answer = await send("GET", root.dataset.api);
    if (answer.ok) showListings(answer.data);
  }

  function showListings(product) {
    const badge = document.getElementById("product-status");
    badge.textContent = product.status;
    badge.className = `badge listing-${product.status}`;
    const body = document.querySelector("#listings tbody");
    if (!product.listings.length) {
      const row = element("tr", null, { class: "none-yet" });
      row.append(element("td", "Not listed anywhere yet.", { colspan: 5 }));
      body.replaceChildren(row);
      return;
    }
    body.replaceChildren(
      ...product.listings.map((listing) => {
        const row = element("tr", null, { "data-platform": listing.platform });
        const state = element("td");
        state.append(element("span", listing.status, { class: `badge listing-${listing.status}` }));
        const link = element("td");
        if (listing.url) link.append(element("a", listing.url, { href: listing.url }));
        row.append(
          element("td", listing.platform),
          state,
          link,
          element("td", listing.updated),
          element("td", listing.error || "", { class: "field-error" }),
        );
        return row;
      }),
    );
  }

  const live = new EventSource(root.dataset.live);
  live.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    if (run.kind !== "publish") return;
    seen.set(run.id, run);
    if (run.id === following && FINAL.has(run.status)) finished(run);
  });
}
