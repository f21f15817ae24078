"use strict";
// `/`: upload an archive (POST /datasets), start a route (POST /route), poll it, open the report.

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("route-form");
  let jobId = null;

  async function describeCheckpoint() {
    const info = await SDR.json(await SDR.api("/subnets"));
    const note = $("checkpoint");
    note.textContent = `Serving ${info.checkpoint}: ${info.subnets.length} sub-nets.`;
    if (!info.trained) {
      note.textContent += " This is the random-init stand-in checkpoint: rankings are meaningless.";
      note.classList.add("warning");
    }
    note.hidden = false;
  }

  function describeDataset(dataset) {
    const order = (split) => ({ train: 0, test: 1 })[split] ?? 2;
    const splits = Object.entries(dataset.counts)
      .sort(([a], [b]) => order(a) - order(b))
      .map(([split, perClass]) => {
        const n = Object.values(perClass).reduce((x, y) => x + y, 0);
        return `${n} ${split === "all" ? "unsplit" : split}`;
      })
      .join(", ");
    let text = `${dataset.classes.length} classes, ${splits} images`;
    if (dataset.unreadable.length) text += `, ${dataset.unreadable.length} unreadable`;
    return text;
  }

  async function run() {
    const file = $("file").files[0];
    if (!file) throw new Error("Choose a dataset archive first.");
    jobId = null;
    $("progress-card").hidden = false;
    $("report-link").hidden = true;
    $("status").textContent = `Uploading ${file.name}…`;

    const upload = new FormData();
    upload.append("file", file);
    const dataset = await SDR.json(await SDR.api("/datasets", { method: "POST", body: upload }));
    $("dataset-summary").textContent = describeDataset(dataset);

    const options = { dataset_id: dataset.id, scorer: $("scorer").value, screen: $("screen").checked };
    const accepted = await SDR.json(await SDR.api("/route", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(options),
    }));
    jobId = accepted.job_id;
    const reportUrl = `/ui/route/${jobId}`;
    $("job-id").textContent = jobId;
    $("report-link").querySelector("a").href = reportUrl;
    $("report-link").hidden = false;
    $("cancel").hidden = false;

    const job = await SDR.pollJob(jobId, SDR.showProgress);
    $("cancel").hidden = true;
    if (job.status !== "succeeded") {
      $("report-link").hidden = true;
      throw SDR.jobError(job);
    }
    window.location.assign(reportUrl);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").hidden = true;
    $("submit").disabled = true;
    try {
      await run();
    } catch (error) {
      if (jobId === null) $("progress-card").hidden = true; // nothing was started
      SDR.showError(error);
    } finally {
      $("submit").disabled = false;
    }
  });

  $("cancel").addEventListener("click", async () => {
    try {
      await SDR.json(await SDR.api(`/route/${jobId}`, { method: "DELETE" }));
    } catch (error) {
      SDR.showError(error);
    }
  });

  describeCheckpoint().catch(SDR.showError);
})();
