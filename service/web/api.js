"use strict";
// Shared by both pages: API calls that carry the session's key, job polling, number formatting.
// When the API answers 401 the page asks for the key once (a modal form), keeps it in
// sessionStorage (this tab only) and repeats the request with `Authorization: Bearer <key>`.

const SDR = (() => {
  const KEY_NAME = "sdr-api-key";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  let pendingKey = null; // one dialog for every request that got a 401 at the same time

  // Both pages ask for the key the same way, so the dialog is built here on first need, not
  // written into each page's markup. Static text only; the reason is set with textContent.
  const KEY_DIALOG = `
    <form method="dialog" id="key-form">
      <h2 id="key-title">API key needed</h2>
      <p id="key-reason"></p>
      <label for="key-input">API key</label>
      <input id="key-input" name="key" type="password" autocomplete="off" required>
      <div class="actions">
        <button type="submit" value="ok" class="primary">Use key</button>
        <button type="submit" value="cancel" formnovalidate>Cancel</button>
      </div>
    </form>`;

  function keyDialog() {
    let dialog = document.getElementById("key-dialog");
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "key-dialog";
      dialog.setAttribute("aria-labelledby", "key-title");
      dialog.innerHTML = KEY_DIALOG;
      document.body.append(dialog);
    }
    return dialog;
  }

  function askForKey(reason) {
    if (pendingKey) return pendingKey;
    const dialog = keyDialog();
    const input = document.getElementById("key-input");
    document.getElementById("key-reason").textContent = reason;
    input.value = "";
    pendingKey = new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        pendingKey = null;
        resolve(dialog.returnValue === "ok" ? input.value.trim() : "");
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
    });
    return pendingKey;
  }

  /** fetch() against the API, with the key when one is known; asks for one on 401. */
  async function api(path, options = {}) {
    for (;;) {
      const headers = new Headers(options.headers || {});
      const key = sessionStorage.getItem(KEY_NAME);
      if (key) headers.set("Authorization", `Bearer ${key}`);
      const response = await fetch(path, { ...options, headers });
      if (response.status !== 401) return response;
      sessionStorage.removeItem(KEY_NAME);
      const entered = await askForKey(key
        ? "That key was refused. Enter a valid API key."
        : "This server asks for an API key. It is kept for this browser tab only.");
      if (!entered) throw new Error("This server needs an API key; reload the page to enter one.");
      sessionStorage.setItem(KEY_NAME, entered);
    }
  }

  /** The JSON body of a successful response; otherwise an Error carrying the API's `detail`. */
  async function json(response) {
    const body = await response.json().catch(() => null);
    if (response.ok) return body;
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(`${response.status}: ${detail}`);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Polls GET /route/{job_id} until the job ends; `onUpdate(job)` after every answer. */
  async function pollJob(jobId, onUpdate, intervalMs = 700) {
    for (;;) {
      const job = await json(await api(`/route/${jobId}`));
      onUpdate(job);
      if (TERMINAL.has(job.status)) return job;
      await sleep(intervalMs);
    }
  }

  /** Shows a job's progress in the page's <progress id="progress"> and status line. */
  function showProgress(job) {
    const bar = document.getElementById("progress");
    const { done, total } = job.progress;
    bar.max = Math.max(total, 1);
    bar.value = done;
    const words = { queued: "Queued, waiting for a worker", running: "Scoring paths",
      succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };
    document.getElementById("status").textContent = `${words[job.status] || job.status}: ${done} of ${total} paths`;
  }

  /** Downloads `path` (with the key) as a file named `filename`. */
  async function download(path, filename) {
    const response = await api(path);
    if (!response.ok) await json(response);
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  /** The Error that a job which did not succeed ends a page's work with. */
  function jobError(job) {
    return new Error(job.status === "cancelled" ? "The route was cancelled." : `The route failed: ${job.error}`);
  }

  function showError(error) {
    const box = document.getElementById("error");
    box.textContent = error instanceof Error ? error.message : String(error);
    box.hidden = false;
  }

  const percent = (x) => `${(100 * x).toFixed(1)}%`;
  const points = (x) => `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(100 * x).toFixed(1)} pts`;

  return { api, json, pollJob, showProgress, download, jobError, showError, percent, points };
})();
