// The characters pages: create, upload (drop or choose), train with live step and loss and a
// loss chart, choose a LoRA version, delete. Live progress comes from the studio's one channel.
import { clearErrors, element, send, showErrors } from "./fields.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);

const createForm = document.getElementById("create-character");
if (createForm) {
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(createForm));
    const answer = await send("POST", createForm.dataset.action, values);
    if (answer.ok) window.location.assign(answer.data.url);
    else showErrors(createForm, answer.data);
  });
}

const root = document.getElementById("character");
if (root) characterPage(root);

function characterPage(root) {
  const api = root.dataset.api;
  let trainingId = root.dataset.training || "";
  let points = [];
  let maxSteps = 0;
  const seen = new Map(); // training run id -> its latest card, for one that ends before its POST answers

  // -- images --------------------------------------------------------------------------------
  const upload = document.getElementById("upload");
  const fileInput = document.getElementById("files");
  const status = document.getElementById("upload-status");
  const refusedList = document.getElementById("refused");

  async function sendFiles(files) {
    if (!files.length) {
      status.textContent = "Choose or drop images first.";
      return;
    }
    const body = new FormData();
    for (const file of files) body.append("files", file, file.name);
    status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`;
    refusedList.replaceChildren();
    const answer = await send("POST", upload.dataset.action, body);
    if (!answer.ok) {
      status.textContent = "";
      refusedList.append(element("li", (answer.data && answer.data.message) || "The upload was refused."));
      return;
    }
    const { added, refused, character } = answer.data;
    status.textContent = `${added.length} added, ${refused.length} refused.`;
    for (const item of refused) {
      const row = element("li");
      row.append(element("strong", item.filename), document.createTextNode(`: ${item.reason}`));
      refusedList.append(row);
    }
    showCharacter(character);
    fileInput.value = "";
  }

  upload.addEventListener("submit", (event) => {
    event.preventDefault();
    sendFiles([...fileInput.files]);
  });
  for (const name of ["dragenter", "dragover"]) {
    upload.addEventListener(name, (event) => {
      event.preventDefault();
      upload.classList.add("dragging");
    });
  }
  upload.addEventListener("dragleave", (event) => {
    if (!upload.contains(event.relatedTarget)) upload.classList.remove("dragging");
  });
  upload.addEventListener("drop", (event) => {
    event.preventDefault();
    upload.classList.remove("dragging");
    sendFiles([...event.dataTransfer.files]);
  });

  // -- training ------------------------------------------------------------------------------
  const trainForm = document.getElementById("train");
  const trainButton = document.getElementById("train-button");
  const training = document.getElementById("training");

  trainForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = {};
    for (const input of trainForm.querySelectorAll("[data-type]")) {
      const text = input.value.trim();
      if (text === "") continue;
      const type = input.dataset.type;
      // A value that is not a number is sent as typed: the trainer's check names it.
      params[input.name] = type === "int" || type === "float" ? (Number.isFinite(Number(text)) ? Number(text) : text) : text;
    }
    const answer = await send("POST", trainForm.dataset.action, { params });
    if (!answer.ok) {
      showErrors(trainForm, answer.data);
      return;
    }
    clearErrors(trainForm);
    follow(seen.get(answer.data.id) || answer.data);
    if (FINAL.has((seen.get(trainingId) || {}).status)) ended();
  });

  function follow(run) {
    trainingId = run.id;
    points = [];
    maxSteps = run.max_steps || 0;
    training.hidden = false;
    trainButton.disabled = true;
    document.getElementById("training-run").href = run.url;
    document.getElementById("training-loss").textContent = "-";
    document.getElementById("training-eta").textContent = "-";
    showRun(run);
    draw();
  }

  function showRun(run) {
    document.getElementById("cancel-training").hidden = FINAL.has(run.status);
    document.getElementById("training-status").textContent = run.error ? `${run.status}: ${run.error}` : run.status;
    document.getElementById("training-progress").value = run.progress;
    if (run.max_steps) maxSteps = run.max_steps;
    document.getElementById("training-step").textContent = `${run.step} / ${run.max_steps}`;
  }

  function showProgress(progress) {
    document.getElementById("training-progress").value = progress.progress;
    if (progress.max_steps) maxSteps = progress.max_steps;
    document.getElementById("training-step").textContent = `${progress.step} / ${progress.max_steps}`;
    if (typeof progress.loss === "number") {
      document.getElementById("training-loss").textContent = progress.loss.toFixed(4);
      points.push([progress.step, progress.loss]);
      draw();
    }
    if (typeof progress.eta_s === "number") {
      document.getElementById("training-eta").textContent = `${Math.max(0, Math.round(progress.eta_s))} s`;
    }
  }

  // The loss chart: one polyline over steps (x) and the loss range seen so far (y).
  function draw() {
    const line = document.getElementById("loss-line");
    const range = document.getElementById("loss-range");
    if (!points.length) {
      line.setAttribute("points", "");
      range.textContent = "";
      return;
    }
    const losses = points.map(([, loss]) => loss);
    const low = Math.min(...losses);
    const high = Math.max(...losses);
    const span = high - low || 1;
    const width = maxSteps || Math.max(...points.map(([step]) => step)) || 1;
    line.setAttribute(
      "points",
      points.map(([step, loss]) => `${((step / width) * 400).toFixed(1)},${(115 - ((loss - low) / span) * 105).toFixed(1)}`).join(" "),
    );
    range.textContent = `(from ${high.toFixed(4)} to ${losses[losses.length - 1].toFixed(4)})`;
  }

  // -- the character as the server has it now ------------------------------------------------
  function showCharacter(character) {
    document.getElementById("image-count").textContent = character.image_count;
    document.getElementById("lora-state").textContent = character.lora;
    const images = document.getElementById("images");
    images.replaceChildren(
      ...(character.images.length
        ? character.images.map((image) => {
            const item = element("li");
            item.append(
              element("img", null, { src: image.url, alt: image.caption || image.filename, width: 120, height: 120, loading: "lazy" }),
              element("span", image.filename),
              element("button", "Remove", { type: "button", class: "remove-image", "data-filename": image.filename, "aria-label": `Remove ${image.filename}` }),
            );
            return item;
          })
        : [element("li", "No images yet.", { class: "none-yet" })]),
    );
    const runs = document.getElementById("training-runs");
    runs.replaceChildren(
      ...(character.training.length
        ? character.training.map((run) => {
            const item = element("li");
            item.append(element("a", run.created, { href: run.url }), " ", element("span", run.status, { class: "badge" }), ` ${run.max_steps} steps`);
            if (run.error) item.append(" ", element("span", run.error, { class: "field-error" }));
            return item;
          })
        : [element("li", "None yet.", { class: "none-yet" })]),
    );
    const body = document.querySelector("#versions tbody");
    body.replaceChildren(
      ...(character.versions.length
        ? character.versions.map((version) => {
            const row = element("tr", null, { "data-version": version.version });
            const name = element("td", `v${version.version}`);
            if (version.active) name.append(" ", element("strong", "active", { class: "badge" }));
            const made = element("td");
            made.append(element("a", version.made, { href: version.run_url }));
            const file = element("td");
            file.append(element("code", version.filename));
            const use = element("td");
            if (!version.active) {
              use.append(element("button", `Use v${version.version}`, { type: "button", class: "use-version", "data-version": version.version }));
            }
            row.append(name, element("td", `${version.trainer} (${version.base_model})`), element("td", version.steps), made, file, use);
            return row;
          })
        : [(() => {
            const row = element("tr", null, { class: "none-yet" });
            row.append(element("td", "Not trained yet.", { colspan: 6 }));
            return row;
          })()]),
    );
  }

  async function refresh() {
    const answer = await send("GET", api);
    if (!answer.ok) return;
    showCharacter(answer.data);
    const now = answer.data.training_now;
    if (now && now.id !== trainingId) follow(now);
    else if (now) showRun(now);
  }

  document.getElementById("versions").addEventListener("click", async (event) => {
    const button = event.target.closest(".use-version");
    if (!button) return;
    const error = document.getElementById("versions-error");
    const answer = await send("POST", `${api}/active`, { version: Number(button.dataset.version) });
    error.hidden = answer.ok;
    if (answer.ok) showCharacter(answer.data);
    else error.textContent = answer.data.message;
  });

  document.getElementById("images").addEventListener("click", async (event) => {
    const button = event.target.closest(".remove-image");
    if (!button) return;
    button.disabled = true;
    const answer = await send("DELETE", `${api}/images/${encodeURIComponent(button.dataset.filename)}`);
    status.textContent = answer.ok ? `Removed ${button.dataset.filename}.` : answer.data.message;
    refresh();
  });

  const cancel = document.getElementById("cancel-training");
  cancel.addEventListener("click", async () => {
    const error = document.getElementById("cancel-error");
    const answer = await send("POST", `${api}/training/cancel`);
    error.hidden = answer.ok;
    if (answer.ok) showRun(answer.data);
    else error.textContent = answer.data.message;
  });

  // -- delete --------------------------------------------------------------------------------
  const dialog = document.getElementById("delete-dialog");
  document.getElementById("delete").addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    const answer = await send("DELETE", api);
    if (answer.ok) {
      window.location.assign(root.dataset.list);
      return;
    }
    const error = document.getElementById("delete-error");
    error.textContent = answer.data.message;
    error.hidden = false;
  });

  // -- live ----------------------------------------------------------------------------------
  const live = new EventSource(root.dataset.live);
  live.addEventListener("hello", () => refresh()); // (re)connected: catch up on what was missed
  live.addEventListener("progress", (event) => {
    const progress = JSON.parse(event.data);
    if (progress.id === trainingId) showProgress(progress);
  });
  live.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    if (run.kind === "training") seen.set(run.id, run);
    if (run.id !== trainingId) return;
    showRun(run);
    if (FINAL.has(run.status)) ended();
  });

  function ended() {
    trainButton.disabled = false;
    refresh();
  }
}
