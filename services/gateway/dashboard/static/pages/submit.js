// Submit: a form for code and API tasks, with a cron preview; the API's field errors sit by their field.
import { api, query, recent } from "../api.js";
import { field, h } from "../ui.js";

const EXAMPLE = `def main(name="world"):
    print(f"hello, {name}")
    return {"greeting": f"hello, {name}"}
`;

function input(name, attrs = {}) { return h("input", { name, ...attrs }); }
function area(name, attrs = {}, text = "") { const element = h("textarea", { name, spellcheck: "false", ...attrs }); element.value = text; return element; }

/** Tab indents in the code editor instead of leaving it; Escape then Tab leaves. */
function editor(textarea) {
  let escaped = false;
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { escaped = true; return; }
    if (event.key !== "Tab" || escaped || event.shiftKey) { escaped = false; return; }
    event.preventDefault();
    const { selectionStart: start, selectionEnd: end, value } = textarea;
    textarea.value = `${value.slice(0, start)}    ${value.slice(end)}`;
    textarea.selectionStart = textarea.selectionEnd = start + 4;
  });
  return textarea;
}

function json(form, name, fallback) {
  const text = form.elements[name].value.trim();
  if (!text) return fallback;
  try { return JSON.parse(text); } catch (problem) { throw Object.assign(new Error(`${name} is not valid JSON: ${problem.message}`), { field: name }); }
}

function number(form, name) {
  const text = form.elements[name].value.trim();
  return text === "" ? undefined : Number(text);
}

function buildSpec(form) {
  const data = new FormData(form);
  const kind = data.get("kind");
  const trigger = data.get("task_type");
  const spec = { name: data.get("name").trim(), task_type: trigger };
  if (kind === "code") {
    Object.assign(spec, { function_code: data.get("function_code"), function_name: data.get("function_name").trim() || undefined,
      args: json(form, "args", []), kwargs: json(form, "kwargs", {}),
      requirements: data.get("requirements").split("\n").map((r) => r.trim()).filter(Boolean),
      network: data.get("network") === "on" });
  } else {
    const expected = data.get("expected_status").split(/[\s,]+/).filter(Boolean).map(Number);
    Object.assign(spec, { api_url: data.get("api_url").trim(), method: data.get("method"),
      headers: json(form, "headers", {}), data: json(form, "data", undefined), expected_status: expected.length ? expected : undefined });
  }
  if (trigger === "delayed") spec.delay_seconds = number(form, "delay_seconds");
  if (trigger === "scheduled") {
    spec.cron_expression = data.get("cron_expression").trim();
    spec.timezone = data.get("timezone").trim() || "UTC";
    spec.jitter_seconds = number(form, "jitter_seconds");
  }
  for (const name of ["timeout", "memory_mb", "cpus", "max_retries", "max_concurrency"]) spec[name] = number(form, name);
  const keys = data.get("concurrency_key").split(",").map((k) => k.trim()).filter(Boolean);
  spec.concurrency_key = keys.length > 1 ? keys : keys[0];
  spec.rate_limit = data.get("rate_limit").trim() || undefined;
  spec.fairness_key = data.get("fairness_key").trim() || undefined;
  if (data.get("priority") !== "3") spec.priority = Number(data.get("priority"));
  spec.isolated = data.get("isolated") === "on" || undefined;
  return JSON.parse(JSON.stringify(spec));  // drops the undefined values
}

function showError(form, problem, general) {
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
  for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  const box = problem.field && form.querySelector(`.field[data-field="${CSS.escape(problem.field)}"]:not([hidden] *)`);
  if (box && box.closest("details")) box.closest("details").open = true;  // a folded section shows its error
  if (box && box.offsetParent !== null) {
    const control = box.querySelector("input, textarea, select");
    box.querySelector(".field-error").textContent = problem.message;
    control.setAttribute("aria-invalid", "true");
    control.focus();
    general.textContent = "";
  } else {
    general.textContent = problem.field ? `${problem.field}: ${problem.message}` : problem.message;
  }
}

export function render(root, { params, signal }) {
  const preview = h("ol", { class: "plain mono", id: "cron-preview", "aria-live": "polite" });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const general = h("p", { class: "field-error", id: "submit-error", role: "alert" });
  const form = h("form", { class: "card submit", novalidate: true, id: "submit-form" },
    h("fieldset", {}, h("legend", {}, "Kind"),
      h("label", { class: "inline" }, input("kind", { type: "radio", value: "code", checked: true }), " Python code"),
      h("label", { class: "inline" }, input("kind", { type: "radio", value: "api" }), " HTTP request")),
    field("Name", input("name", { required: true, maxlength: 200, value: "my task" })),
    h("div", { class: "for-code" },
      field("Code", editor(area("function_code", { rows: 12, class: "mono" }, EXAMPLE)), "Tab indents; Escape then Tab moves on."),
      field("Function name", input("function_name", { value: "main" })),
      h("div", { class: "cols" }, field("args (JSON list)", area("args", { rows: 2, class: "mono" }, "[]")),
        field("kwargs (JSON object)", area("kwargs", { rows: 2, class: "mono" }, "{}"))),
      field("Requirements (one per line)", area("requirements", { rows: 2, class: "mono" })),
      h("label", { class: "inline" }, input("network", { type: "checkbox" }), " Network access")),
    h("div", { class: "for-api", hidden: true },
      h("div", { class: "cols" }, field("URL", input("api_url", { type: "url", placeholder: "https://example.com/hook" })),
        field("Method", h("select", { name: "method" }, ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) => h("option", {}, m))))),
      h("div", { class: "cols" }, field("Headers (JSON object)", area("headers", { rows: 2, class: "mono" }, "{}")),
        field("Body (JSON)", area("data", { rows: 2, class: "mono" }))),
      field("Expected status codes", input("expected_status", { placeholder: "200, 201 (empty: any 2xx)" }))),
    h("fieldset", {}, h("legend", {}, "When"),
      ["immediate", "delayed", "scheduled"].map((type) => h("label", { class: "inline" },
        input("task_type", { type: "radio", value: type, checked: (params.get("trigger") || "immediate") === type }), ` ${type}`)),
      h("div", { class: "for-delayed" }, field("Delay (seconds)", input("delay_seconds", { type: "number", min: 0, step: "any", value: 60 }))),
      h("div", { class: "for-scheduled" }, h("div", { class: "cols" },
        field("Cron expression", input("cron_expression", { class: "mono", value: "*/5 * * * *" }), "5 fields, 6 with seconds first, or @daily…"),
        field("Time zone", input("timezone", { value: zone }))),
      field("Jitter (seconds)", input("jitter_seconds", { type: "number", min: 0, step: "any" }),
        "Each fire is delayed by a fixed offset below this, so schedules at the same minute spread out."),
      h("p", {}, "Next fire times:"), preview)),
    h("details", {}, h("summary", {}, "Limits and retries"), h("div", { class: "cols" },
      field("Timeout (s)", input("timeout", { type: "number", min: 0, step: "any" })),
      field("Memory (MB)", input("memory_mb", { type: "number", min: 16 })),
      field("CPUs", input("cpus", { type: "number", min: 0, step: "any" })),
      field("Max retries", input("max_retries", { type: "number", min: 0, max: 20 }))),
      h("label", { class: "inline" }, input("isolated", { type: "checkbox" }), " Run entirely inside a sandbox (isolated)")),
    h("details", {}, h("summary", {}, "Flow control"), h("div", { class: "cols" },
      field("Concurrency key", input("concurrency_key", { class: "mono", placeholder: "partner-api, tenant-42" }),
        "Runs sharing a key share its limits; several keys separated by commas."),
      field("Max concurrency", input("max_concurrency", { type: "number", min: 1 })),
      field("Rate limit", input("rate_limit", { class: "mono", placeholder: "10/s, 100/m, 1000/h" })),
      field("Priority", h("select", { name: "priority" }, [1, 2, 3, 4, 5].map((p) => h("option", { selected: p === 3 }, p))),
        "When runs wait for capacity, higher goes first."),
      field("Fairness key", input("fairness_key", { class: "mono", placeholder: "tenant" }),
        "Waiting runs are served round-robin by this key."))),
    general, h("button", { type: "submit", id: "submit-task" }, "Submit"));
  root.append(h("h1", { tabindex: -1 }, "Submit a task"), form);

  const sync = () => {
    const kind = form.elements.kind.value;
    const trigger = form.elements.task_type.value;
    form.querySelector(".for-code").hidden = kind !== "code";
    form.querySelector(".for-api").hidden = kind !== "api";
    form.querySelector(".for-delayed").hidden = trigger !== "delayed";
    form.querySelector(".for-scheduled").hidden = trigger !== "scheduled";
    if (trigger === "scheduled") refreshPreview();
  };

  let previewTimer = null;
  const refreshPreview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const slot = form.querySelector('.field[data-field="cron_expression"] .field-error');
      try {
        const reply = await api(`/api/cron/preview${query({ expression: form.elements.cron_expression.value,
          timezone: form.elements.timezone.value.trim() || "UTC", count: 5 })}`, { signal });
        slot.textContent = "";
        preview.replaceChildren(...reply.local.map((local) => h("li", {}, local.replace("T", " "))));
      } catch (problem) {
        if (problem.name === "AbortError") return;
        preview.replaceChildren();
        const target = problem.field === "timezone" ? form.querySelector('.field[data-field="timezone"] .field-error') : slot;
        target.textContent = problem.message;
      }
    }, 250);
  };
  form.addEventListener("change", sync);
  form.elements.cron_expression.addEventListener("input", refreshPreview);
  form.elements.timezone.addEventListener("input", refreshPreview);
  sync();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("#submit-task");
    let spec;
    try { spec = buildSpec(form); } catch (problem) { showError(form, problem, general); return; }
    button.disabled = true;
    try {
      const created = await api(spec.task_type === "scheduled" ? "/api/scheduled-tasks" : "/api/tasks", { method: "POST", body: spec });
      recent.set(created.id, created);
      window.location.hash = spec.task_type === "scheduled" ? `#/schedules/${encodeURIComponent(created.id)}` : `#/tasks/${encodeURIComponent(created.id)}`;
    } catch (problem) {
      showError(form, problem, general);
    } finally {
      button.disabled = false;
    }
  });
}
