"use strict";
// `/ui/route/{job_id}`: the report of one route job, drawn from GET /route/{job_id}.
// `result` has the `sdr route --json` shape; optional fields are shown only when present.

(() => {
  const $ = (id) => document.getElementById(id);
  const jobId = window.location.pathname.split("/").pop();
  const SVG = "http://www.w3.org/2000/svg";

  // --- reading the result ---------------------------------------------------------------------

  /** [low, high] of a `{"ci": [low, high]}` field, or null. */
  function interval(entry) {
    const ci = entry && entry.ci;
    return Array.isArray(ci) && ci.length === 2 ? ci : null;
  }

  /** One row per path: its rank, accuracy, gain over W0 and whether it ties with the best. */
  function rows(result) {
    const w0 = result.supernet.accuracy;
    const tied = new Set(result.ties || []);
    return result.paths.map((p, i) => ({
      rank: p.rank ?? i + 1,
      path: p.path,
      accuracy: p.accuracy,
      gain: p.accuracy - w0,
      tied: tied.has(p.path) || p.tied === true,
      best: p.path === result.best.path,
    }));
  }

  // --- summary cards --------------------------------------------------------------------------

  function ciText(ci) {
    return ci ? `95% CI ${SDR.percent(ci[0])} – ${SDR.percent(ci[1])}` : "no confidence interval in this result";
  }

  function renderSummary(result, table) {
    const { best, supernet } = result;
    $("best-path").textContent = best.path;
    $("best-accuracy").textContent = SDR.percent(best.accuracy);
    $("best-ci").textContent = ciText(interval(best));
    $("w0-accuracy").textContent = SDR.percent(supernet.accuracy);
    $("w0-ci").textContent = ciText(interval(supernet));
    const beating = table.filter((r) => r.gain > 0).length;
    $("gain-summary").textContent =
      `Best path: ${SDR.points(best.accuracy - supernet.accuracy)} over W0; ${beating} of ${table.length} paths beat W0.`;
  }

  // --- weights and the timm snippet -----------------------------------------------------------

  function snippet(file) {
    return [
      "# pip install timm safetensors",
      "import json, torch, timm.models.resnet as tr",
      "from safetensors import safe_open",
      "from safetensors.torch import load_file",
      "",
      `file = ${JSON.stringify(file)}`,
      'with safe_open(file, framework="pt") as f:',
      '    header = json.loads(f.metadata()["sdr"])',
      'kwargs = dict(header["timm_kwargs"], block=getattr(tr, header["timm_kwargs"]["block"]))',
      "model = tr.ResNet(**kwargs)",
      "model.load_state_dict(load_file(file), strict=True)",
      "model.eval()",
      'print(header["path"], header["preprocessing"])  # resize, center crop, channels, mean, std',
    ].join("\n");
  }

  async function wireActions(bestPath) {
    // Same name as the API's Content-Disposition: <checkpoint stem>-<path>.safetensors.
    const info = await SDR.json(await SDR.api("/subnets"));
    const filename = `${info.checkpoint.replace(/\.safetensors$/, "")}-${bestPath}.safetensors`;
    $("snippet").textContent = snippet(filename);
    const say = (text) => { $("action-status").textContent = text; };

    $("download").addEventListener("click", async () => {
      $("download").disabled = true;
      say(`Preparing ${filename}…`);
      try {
        await SDR.download(`/subnets/${bestPath}/weights`, filename);
        say(`Saved ${filename}.`);
      } catch (error) {
        say(`Download failed: ${error.message}`);
      } finally {
        $("download").disabled = false;
      }
    });

    $("copy-snippet").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("snippet").textContent);
        say("Snippet copied.");
      } catch {
        // No clipboard outside secure contexts: show and select the code for Ctrl+C instead.
        $("snippet-box").open = true;
        window.getSelection().selectAllChildren($("snippet"));
        say("Copying is blocked here; the snippet is selected, press Ctrl+C.");
      }
    });
    return info;
  }

  function describeSubnet(info, bestPath) {
    const subnet = info.subnets.find((s) => s.path === bestPath);
    $("checkpoint-warning").hidden = info.trained;
    if (subnet) {
      const cluster = subnet.cluster_size === null ? "unknown cluster size" : `cluster of ${subnet.cluster_size} images`;
      $("best-subnet").textContent =
        `${(subnet.params / 1e6).toFixed(2)} M parameters, ${subnet.feature_dim}-d features, ${cluster}`;
    }
  }

  // --- histogram of per-path gain over W0 (paper Fig. 4b) -------------------------------------

  function svg(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A bin width of 1, 2 or 5 times a power of ten giving about `target` bins over `span`. */
  function niceWidth(span, target) {
    const raw = span / target;
    const power = 10 ** Math.floor(Math.log10(raw));
    return [1, 2, 5, 10].map((m) => m * power).find((w) => w >= raw);
  }

  function renderHistogram(table, bestGain) {
    const figure = $("histogram");
    const gains = table.map((r) => 100 * r.gain); // accuracy points
    let lo = Math.min(0, ...gains);
    let hi = Math.max(0, ...gains);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const width = niceWidth(hi - lo, 16);
    const start = Math.floor(lo / width) * width;
    const nBins = Math.max(1, Math.ceil((hi - start) / width + 1e-9));
    const counts = new Array(nBins).fill(0);
    for (const g of gains) counts[Math.min(nBins - 1, Math.floor((g - start) / width + 1e-9))] += 1;
    const maxCount = Math.max(...counts);

    // Drawn at the figure's own width so that text keeps its size on a phone.
    const W = Math.max(300, Math.min(760, figure.clientWidth)), H = 300;
    const m = { left: 52, right: 16, top: 46, bottom: 52 };
    const x = (v) => m.left + ((v - start) / (nBins * width)) * (W - m.left - m.right);
    const y = (c) => H - m.bottom - (c / maxCount) * (H - m.top - m.bottom);
    const beating = gains.filter((g) => g > 0).length;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "hist-svg-title hist-svg-desc" });
    chart.append(
      svg("title", { id: "hist-svg-title" }, "Histogram of per-path gain over W0"),
      svg("desc", { id: "hist-svg-desc" },
        `${table.length} paths in bins of ${width} accuracy points; ${beating} paths beat W0. ` +
        `Bin counts from lowest gain: ${counts.join(", ")}.`),
    );
    counts.forEach((c, i) => {
      if (!c) return;
      const left = start + i * width;
      chart.append(svg("rect", {
        x: x(left) + 1, y: y(c), width: Math.max(1, x(left + width) - x(left) - 2), height: y(0) - y(c),
        class: left + width <= 0 ? "bar worse" : "bar better",
      }));
    });
    // Axes and ticks.
    chart.append(svg("line", { x1: m.left, x2: W - m.right, y1: y(0), y2: y(0), class: "axis" }));
    chart.append(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: y(0), class: "axis" }));
    const tickEvery = Math.ceil(nBins / Math.max(3, Math.floor(W / 80)));
    for (let i = 0; i <= nBins; i += tickEvery) {
      const v = start + i * width;
      chart.append(svg("text", { x: x(v), y: y(0) + 18, class: "tick", "text-anchor": "middle" },
        `${v > 0 ? "+" : ""}${Number(v.toFixed(6))}`));
    }
    for (const c of [0, Math.ceil(maxCount / 2), maxCount]) {
      chart.append(svg("text", { x: m.left - 6, y: y(c) + 4, class: "tick", "text-anchor": "end" }, String(c)));
    }
    chart.append(svg("text", { x: (m.left + W - m.right) / 2, y: H - 8, class: "label", "text-anchor": "middle" },
      "gain over W0 (accuracy points)"));
    const middle = (m.top + y(0)) / 2;
    chart.append(svg("text", { x: 14, y: middle, class: "label", "text-anchor": "middle",
      transform: `rotate(-90 14 ${middle})` }, "paths"));
    // W0 and the best path, labelled above the bars on two rows so the labels never collide.
    const labelX = (v) => Math.min(W - 24, Math.max(m.left, v));
    chart.append(svg("line", { x1: x(0), x2: x(0), y1: 20, y2: y(0), class: "marker w0" }));
    chart.append(svg("text", { x: labelX(x(0)), y: 15, class: "label", "text-anchor": "middle" }, "W0"));
    const bx = x(100 * bestGain);
    chart.append(svg("line", { x1: bx, x2: bx, y1: 38, y2: y(0), class: "marker best" }));
    chart.append(svg("text", { x: labelX(bx), y: 33, class: "label", "text-anchor": "middle" }, "best"));
    figure.replaceChildren(chart);
    $("hist-caption").textContent =
      `Accuracy of each path minus the supernet W0's; bars right of W0 are paths that beat it (${beating} of ${table.length}).`;
  }

  // --- ranking table --------------------------------------------------------------------------

  const COLUMNS = [
    { key: "rank", label: "Rank", text: (r) => String(r.rank) },
    { key: "path", label: "Path", text: (r) => r.path },
    { key: "accuracy", label: "Accuracy", text: (r) => SDR.percent(r.accuracy) },
    { key: "gain", label: "Gain", text: (r) => SDR.points(r.gain).replace(" pts", "") },
    { key: "tied", label: "Tie", text: (r) => (r.best ? "best" : r.tied ? "≈" : "") },
  ];

  function renderTable(table) {
    const head = $("ranking-head");
    const body = $("ranking").tBodies[0];
    let sort = { key: "rank", ascending: true };

    function draw() {
      const sign = sort.ascending ? 1 : -1;
      const sorted = [...table].sort((a, b) => {
        const va = a[sort.key], vb = b[sort.key];
        const order = typeof va === "string" ? va.localeCompare(vb) : Number(va) - Number(vb);
        return sign * order || a.rank - b.rank;
      });
      body.replaceChildren(...sorted.map((r) => {
        const tr = document.createElement("tr");
        if (r.best) tr.className = "is-best";
        else if (r.tied) tr.className = "is-tied";
        for (const col of COLUMNS) {
          const td = document.createElement(col.key === "path" ? "th" : "td");
          if (col.key === "path") td.scope = "row";
          td.textContent = col.text(r);
          tr.append(td);
        }
        return tr;
      }));
      for (const th of head.children) {
        th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.ascending ? "ascending" : "descending") : "none");
      }
    }

    head.replaceChildren(...COLUMNS.map((col) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.key = col.key;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = col.label;
      button.addEventListener("click", () => {
        // Numbers other than rank read best-first; a second click reverses.
        sort = sort.key === col.key
          ? { key: col.key, ascending: !sort.ascending }
          : { key: col.key, ascending: col.key === "rank" || col.key === "path" };
        draw();
      });
      th.append(button);
      return th;
    }));
    draw();
    const ties = table.filter((r) => r.tied && !r.best).length;
    $("ties-note").textContent =
      `${ties} other path${ties === 1 ? " is" : "s are"} statistically tied with the best (≈: a paired bootstrap ` +
      "cannot tell them apart). Gain is in accuracy points over W0. Click a column header to sort.";
  }

  // --- skipped files and timings --------------------------------------------------------------

  function renderSkipped(skipped) {
    const list = $("skipped");
    list.replaceChildren(...skipped.map((s) => {
      const li = document.createElement("li");
      li.textContent = typeof s === "string" ? s : `${s.file}: ${s.reason}`;
      return li;
    }));
    $("skipped-none").hidden = skipped.length > 0;
  }

  function renderTimings(timings) {
    $("timings").replaceChildren(...Object.entries(timings).map(([name, seconds]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name.replace(/_s$|_seconds$/, "").replaceAll("_", " ");
      dd.textContent = `${Number(seconds).toFixed(2)} s`;
      div.append(dt, dd);
      return div;
    }));
  }

  // --- the page -------------------------------------------------------------------------------

  function showJob(job) {
    $("job-status").textContent = job.status;
    $("job-dataset").textContent = job.options.dataset_id || `inline manifest (${job.options.manifest_entries} images)`;
    $("job-scorer").textContent = `${job.options.scorer}${job.options.screen ? ", screened" : ""}`;
    SDR.showProgress(job);
  }

  async function main() {
    $("job-id").textContent = jobId;
    let job = await SDR.json(await SDR.api(`/route/${jobId}`));
    showJob(job);
    if (!["succeeded", "failed", "cancelled"].includes(job.status)) {
      $("progress-card").hidden = false;
      job = await SDR.pollJob(jobId, showJob);
    }
    if (job.status !== "succeeded") throw new Error(`The route ${job.status}${job.error ? `: ${job.error}` : "."}`);
    $("progress-card").hidden = true;

    const result = job.result;
    const table = rows(result);
    renderSummary(result, table);
    const drawHistogram = () => renderHistogram(table, result.best.accuracy - result.supernet.accuracy);
    renderTable(table);
    renderSkipped(result.skipped || []);
    renderTimings(result.timings || {});
    $("report").hidden = false;
    drawHistogram(); // once visible: it is drawn at the figure's width
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(drawHistogram, 150);
    });
    document.body.dataset.bestPath = result.best.path; // the report is drawn (tests wait for this)
    describeSubnet(await wireActions(result.best.path), result.best.path);
  }

  main().catch(SDR.showError);
})();
