// Limits: every flow-control key with who runs and who waits, and an operator's limit set per key.
import { api } from "../api.js";
import { every, field, h, table, toast } from "../ui.js";

function limitRow(limit) {
  const max = limit.max_concurrency ?? "—";
  return h("tr", { dataset: { key: limit.key } },
    h("td", {}, h("code", {}, limit.key)),
    h("td", { class: "num", dataset: { cell: "running" } }, `${limit.running} / ${max}`),
    h("td", { class: "num", dataset: { cell: "waiting" } }, limit.waiting),
    h("td", { dataset: { cell: "rate" } }, limit.rate_limit ?? "—"),
    h("td", { dataset: { cell: "source" } }, limit.source),
    h("td", { class: "num" }, limit.admitted_total),
    h("td", { class: "num" }, limit.rate_waits_total));
}

function limitForm(onSaved) {
  const general = h("p", { class: "field-error", id: "limit-error", role: "alert" });
  const form = h("form", { class: "card", id: "limit-form", "aria-labelledby": "limit-form-title" },
    h("h2", { id: "limit-form-title" }, "Set an operator's limit"),
    h("p", { class: "hint" }, "It wins over what the tasks of the key ask for. Leave both empty to clear it."),
    h("div", { class: "cols" },
      field("Key", h("input", { name: "key", required: true, maxlength: 128, class: "mono" })),
      field("Max concurrency", h("input", { name: "max_concurrency", type: "number", min: 1 })),
      field("Rate limit", h("input", { name: "rate_limit", class: "mono", placeholder: "10/s, 100/m, 1000/h" }))),
    general, h("button", { type: "submit", id: "save-limit" }, "Save"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    const key = form.elements.key.value.trim();
    const max = form.elements.max_concurrency.value.trim();
    const rate = form.elements.rate_limit.value.trim();
    const body = { max_concurrency: max === "" ? null : Number(max), rate_limit: rate === "" ? null : rate };
    try {
      await api(`/api/limits/${encodeURIComponent(key)}`, { method: "PUT", body });
      toast(`Limit on ${key} saved`);
      onSaved();
    } catch (problem) {
      const box = problem.field && form.querySelector(`.field[data-field="${CSS.escape(problem.field)}"] .field-error`);
      if (box) box.textContent = problem.message;
      else general.textContent = problem.field ? `${problem.field}: ${problem.message}` : problem.message;
    }
  });
  return form;
}

export function render(root, { signal }) {
  const box = h("section", { class: "card", "aria-labelledby": "limits-title" }, h("h2", { id: "limits-title" }, "Keys"));
  const draw = async () => {
    const reply = await api("/api/limits", { signal });
    box.replaceChildren(h("h2", { id: "limits-title" }, "Keys"), reply.limits.length
      ? table(["Key", "Running / max", "Waiting", "Rate", "Limit from", "Admitted", "Rate waits"],
        reply.limits.map(limitRow), { id: "limit-table" })
      : h("p", { class: "muted" }, "No task uses a concurrency key or rate limit yet."));
  };
  root.append(h("h1", { tabindex: -1 }, "Flow-control limits"), box, limitForm(() => draw().catch(() => {})));
  every(2000, draw, signal);
}
