// Forms of the characters and products pages: JSON to the studio's routes, and each refused
// field's message shown next to its input (the answer's `problems`: [{field, message}]).

/** `{ok, status, data}` of a request; `body` is sent as JSON, or as is when it is FormData. */
export async function send(method, url, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    return { ok: false, status: 0, data: { message: `The server could not be reached (${error.message}).` } };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = { message: `${response.status} ${response.statusText}` };
    }
  }
  return { ok: response.ok, status: response.status, data };
}

/** Hide every error of `form` and mark its inputs valid again. */
export function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Show a refusal: each problem next to the input it names, the rest at the top of the form. */
export function showErrors(form, data) {
  clearErrors(form);
  const problems = data && Array.isArray(data.problems) && data.problems.length
    ? data.problems
    : [{ field: "", message: (data && data.message) || "The server refused this." }];
  let first = null;
  for (const problem of problems) {
    const field = problem.field || "";
    const input = field ? form.querySelector(`[name="${CSS.escape(field)}"]`) : null;
    const slot = (input && form.querySelector(`[data-error-for="${CSS.escape(field)}"]`))
      || form.querySelector('[data-error-for=""]');
    if (!slot) continue;
    const text = input || !field ? problem.message : `${field}: ${problem.message}`;
    slot.textContent = slot.hidden ? text : `${slot.textContent} ${text}`;
    slot.hidden = false;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
  }
  if (first) first.focus();
}

/** An element with `text` as its content (never parsed as HTML). */
export function element(tag, text, attributes = {}) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  return made;
}
