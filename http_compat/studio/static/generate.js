// The generate form: only the fields the operation uses, size presets, and each refusal next to its field.

import { call } from "./studio.js";

export function start(form) {
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
    if (workflow.selectedOptions[0]?.hidden) {
      workflow.value = ""; // a workflow of another operation: back to the operation's default
      workflow.dispatchEvent(new Event("change"));
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

  // The chosen workflow's description, and its defaults as the placeholders of the fields left empty.
  const placeholders = new Map([...form.elements].map((input) => [input, input.placeholder]));
  const saidFirst = about.textContent;
  const showAbout = () => {
    const chosen = workflow.selectedOptions[0];
    about.textContent = chosen?.dataset.about || saidFirst;
    const defaults = chosen?.dataset.defaults ? JSON.parse(chosen.dataset.defaults) : {};
    for (const [input, placeholder] of placeholders) {
      if ("placeholder" in input) input.placeholder = defaults[input.name] ?? placeholder ?? "";
    }
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
      where.textContent = name === field ? message : `${field}: ${message}`;
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
