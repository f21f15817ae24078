"use strict";
// `/ui/route/{job_id}`: the report of one route job, drawn from GET /route/{job_id}.
// `result` has the `sdr route --json` shape; optional fields are shown only when present.

(() => {
  const $ = (id) => document.getElementById(id);
  const jobId = window.location.pathname.split("/").pop();
  const SVG = "http://www.w3.org/2000/svg";

  // --- reading the result (sdr_model/routing/result.py, format "sdr-route" 1) -------------------

  /** One row per ranked path (best first): rank, scores, gain over W0, tie with the best. */
  function rows(result) {
    const w0 = result.supernet.accuracy;
    return result.paths.map((p, i) => ({
      rank: p.rank ?? i + 1,
      path: p.path,
      selection: p.selection_score,
      accuracy: p.accuracy,
      classAccuracy: p.mean_class_accuracy,
      gain: p.accuracy - w0,
      tied: p.tied_with_best === true,
      best: p.path === result.best.path,
    }));
  }

  const level = (result) => `${Math.round(100 * (result.options?.ci_level ?? 0.95))}%`;

  // --- summary cards --------------------------------------------------------------------------

  function ciText(ci, label, format = SDR.percent) {
    return Array.isArray(ci) ? `${label} CI ${format(ci[0])} to ${format(ci[1])}` : "";
  }

  function renderSummary(result, table) {
    const { best, supernet, gain } = result;
    const lvl = level(result);
    $("best-path").textContent = best.path;
    $("best-accuracy").textContent = SDR.percent(best.accuracy);
    $("best-ci").textContent = ciText(best.accuracy_ci, lvl);
    $("w0-accuracy").textContent = SDR.percent(supernet.accuracy);
    $("w0-ci").textContent = ciText(supernet.accuracy_ci, lvl);
    const beating = table.filter((r) => r.gain > 0).length;
    const gainValue = gain?.accuracy ?? best.accuracy - supernet.accuracy;
    const gainCi = ciText(gain?.ci, lvl, SDR.points);
    $("gain-summary").textContent = `Best path: ${SDR.points(gainValue)} over W0${gainCi ? ` (${gainCi})` : ""}; ` +
      `${beating} of ${table.length} paths beat W0 on test.`;
  }

  function renderMethod(result) {
    const data = result.dataset;
    const sel = result.selection;
    const parts = [];
    if (sel && result.scorer === "knn") {
      const how = sel.method === "loo" ? "leave-one-out kNN" : "kNN on a selection split carved from train";
      parts.push(`Paths were ranked by ${how} (k = ${sel.k}) over ${sel.queries} training images.`);
    } else if (result.scorer) {
      parts.push(`Paths were ranked by their ${result.scorer.toUpperCase()} score on the training images.`);
    }
    if (data) {
      const count = (split) => Object.values(data.counts[split] || {}).reduce((a, b) => a + b, 0);
      const source = data.test_source === "given" ? "the archive's test split" : "a stratified held-out split";
      parts.push(`Accuracies are kNN top-1 on the ${count("test")} test images (${source}), which took no part in ` +
        `the choice; ${data.classes.length} classes, ${count("train")} training images.`);
    }
    $("method").textContent = parts.join(" ");
  }

  function renderScreening(screening) {
    if (!screening) return;
    const agrees = { true: "yes", false: "no", null: "not checked" }[String(screening.agrees_with_full_route)];
    const saved = screening.time_saved_seconds;
    $("screening-text").textContent =
      `Every path was scored on ${screening.subset_images} training images, then the best ` +
      `${screening.candidates.length} on all of them; ` +
      `${saved > 0 ? `about ${saved.toFixed(1)} s saved` : "no time saved on a dataset this small"}. ` +
      `Same pick as the full route: ${agrees}.`;
    $("screening").hidden = false;
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

  /**
   * Histogram bins centred on multiples of their width, so that one bin is centred on a gain of 0.
   * Test accuracies move in steps of 100 / nTest points: the width is then an odd number of steps
   * (one step, an exact count per value, unless that makes more than 40 bins), which keeps every
   * gain off the bin edges.
   */
  function bins(gains, nTest) {
    const lo = Math.min(0, ...gains), hi = Math.max(0, ...gains);
    let width = niceWidth(Math.max(hi - lo, 1), 16);
    if (nTest > 0) {
      const step = 100 / nTest;
      const m = Math.max(1, Math.ceil((hi - lo) / step / 40));
      width = (m % 2 === 0 ? m + 1 : m) * step;
    }
    const first = Math.round(lo / width);
    const counts = new Array(Math.round(hi / width) - first + 1).fill(0);
    for (const g of gains) counts[Math.round(g / width) - first] += 1;
    return { width, first, counts };
  }

  function renderHistogram(table, bestGain, nTest) {
    const figure = $("histogram");
    const gains = table.map((r) => 100 * r.gain); // accuracy points
    const { width, first, counts } = bins(gains, nTest);
    const centre = (i) => (first + i) * width;
    const maxCount = Math.max(...counts);
    const label = (v) => `${v > 0 ? "+" : v < 0 ? "−" : ""}${Number(Math.abs(v).toFixed(2))}`;

    // Drawn at the figure's own width so that text keeps its size on a phone.
    const W = Math.max(300, Math.min(760, figure.clientWidth)), H = 300;
    const m = { left: 52, right: 16, top: 46, bottom: 52 };
    const domain = [centre(0) - width / 2, centre(counts.length - 1) + width / 2];
    const x = (v) => m.left + ((v - domain[0]) / (domain[1] - domain[0])) * (W - m.left - m.right);
    const y = (c) => H - m.bottom - (c / maxCount) * (H - m.top - m.bottom);
    const beating = gains.filter((g) => g > 0).length;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "hist-svg-title hist-svg-desc" });
    chart.append(
      svg("title", { id: "hist-svg-title" }, "Histogram of per-path gain over W0"),
      svg("desc", { id: "hist-svg-desc" },
        `${table.length} paths in bins ${Number(width.toFixed(2))} accuracy points wide; ${beating} paths beat W0. ` +
        `Bin counts from lowest gain: ${counts.join(", ")}.`),
    );
    counts.forEach((c, i) => {
      if (!c) return;
      const side = Math.sign(first + i);
      chart.append(svg("rect", {
        x: x(centre(i) - width / 2) + 1, y: y(c), width: Math.max(1, x(width) - x(0) - 2), height: y(0) - y(c),
        class: `bar ${side > 0 ? "better" : side < 0 ? "worse" : "same"}`,
      }));
    });
    // Axes and ticks.
    chart.append(svg("line", { x1: m.left, x2: W - m.right, y1: y(0), y2: y(0), class: "axis" }));
    chart.append(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: y(0), class: "axis" }));
    const tickEvery = Math.ceil(counts.length / Math.max(3, Math.floor(W / 80)));
    counts.forEach((_, i) => {
      if ((first + i) % tickEvery !== 0) return;
      chart.append(svg("text", { x: x(centre(i)), y: y(0) + 18, class: "tick", "text-anchor": "middle" },
        label(centre(i))));
    });
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
    $("hist-caption").textContent = `Test accuracy of each path minus the supernet W0's, in points ` +
      `(${beating} of ${table.length} paths beat W0): green bars are above 0, red below, grey centred on 0.`;
  }

  // --- ranking table --------------------------------------------------------------------------

  /** Table columns: `text` is what a cell shows, `value` what it sorts by (first click: `first`). */
  function columns(result) {
    const score = result.scorer === "knn" ? SDR.percent : (v) => v.toFixed(4).replace("-", "−");
    return [
      { key: "rank", label: "Rank", value: (r) => r.rank, first: "ascending", text: (r) => String(r.rank) },
      { key: "path", label: "Path", value: (r) => r.path, first: "ascending", text: (r) => r.path },
      { key: "tie", label: "Tie", value: (r) => (r.best ? 2 : r.tied ? 1 : 0), first: "descending",
        text: (r) => (r.best ? "best" : r.tied ? "≈" : "") },
      { key: "accuracy", label: "Accuracy", value: (r) => r.accuracy, first: "descending",
        text: (r) => SDR.percent(r.accuracy) },
      { key: "gain", label: "Gain", value: (r) => r.gain, first: "descending",
        text: (r) => SDR.points(r.gain).replace(" pts", "") },
      { key: "selection", label: "Selection score", value: (r) => r.selection, first: "descending",
        text: (r) => score(r.selection) },
      { key: "class-accuracy", label: "Class-mean accuracy", value: (r) => r.classAccuracy, first: "descending",
        text: (r) => SDR.percent(r.classAccuracy) },
    ];
  }

  function renderTable(table, result) {
    const cols = columns(result);
    const head = $("ranking-head");
    const body = $("ranking").tBodies[0];
    let sort = { column: cols[0], direction: "ascending" };

    function draw() {
      const { column, direction } = sort;
      const sign = direction === "ascending" ? 1 : -1;
      const sorted = [...table].sort((a, b) => {
        const va = column.value(a), vb = column.value(b);
        const order = typeof va === "string" ? va.localeCompare(vb) : va - vb;
        return sign * order || a.rank - b.rank;
      });
      body.replaceChildren(...sorted.map((r) => {
        const tr = document.createElement("tr");
        if (r.best) tr.className = "is-best";
        else if (r.tied) tr.className = "is-tied";
        for (const col of cols) {
          const cell = document.createElement(col.key === "path" ? "th" : "td");
          if (col.key === "path") cell.scope = "row";
          cell.textContent = col.text(r);
          tr.append(cell);
        }
        return tr;
      }));
      for (const th of head.children) {
        th.setAttribute("aria-sort", th.dataset.key === column.key ? direction : "none");
      }
    }

    head.replaceChildren(...cols.map((col) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.key = col.key;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = col.label;
      button.addEventListener("click", () => {
        const again = sort.column === col;
        const flipped = sort.direction === "ascending" ? "descending" : "ascending";
        sort = { column: col, direction: again ? flipped : col.first };
        draw();
      });
      th.append(button);
      return th;
    }));
    draw();
    const ties = table.filter((r) => r.tied && !r.best).length;
    $("ties-note").textContent = (result.ties === null
      ? "This scorer gives no per-image evidence, so ties with the best are not computed. "
      : `${ties} other path${ties === 1 ? " is" : "s are"} statistically tied with the best (≈: a paired ` +
        "bootstrap of the selection evidence cannot tell them apart). ") +
      "Accuracy and gain (points over W0) are on test; the selection score ranked the paths. " +
      "Click a column header to sort.";
  }

  // --- skipped files and timings --------------------------------------------------------------

  function renderSkipped(skipped) {
    const list = $("skipped");
    list.replaceChildren(...skipped.map((s) => {
      const li = document.createElement("li");
      li.textContent = `${s.file}: ${s.reason}`;
      return li;
    }));
    $("skipped-none").hidden = skipped.length > 0;
  }

  /** `{"features_seconds": 43.0, "shards": 4}`: durations end in `_seconds`, other entries are counts. */
  function renderTimings(timings) {
    $("timings").replaceChildren(...Object.entries(timings).map(([name, value]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      const seconds = name.endsWith("_seconds");
      dt.textContent = name.replace(/_seconds$/, "").replaceAll("_", " ");
      dd.textContent = seconds ? `${Number(value).toFixed(2)} s` : String(value);
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
    if (job.status !== "succeeded") throw SDR.jobError(job);
    $("progress-card").hidden = true;

    const result = job.result;
    const table = rows(result);
    renderSummary(result, table);
    renderMethod(result);
    renderScreening(result.screening);
    const testImages = Object.values(result.dataset?.counts?.test ?? {}).reduce((a, b) => a + b, 0);
    const drawHistogram = () => renderHistogram(table, table.find((r) => r.best).gain, testImages);
    renderTable(table, result);
    renderSkipped(result.skipped || []);
    renderTimings(result.timings || {});
    $("report").hidden = false;
    drawHistogram(); // once visible: it is drawn at the figure's width
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(drawHistogram, 150);
    });
    describeSubnet(await wireActions(result.best.path), result.best.path);
    document.title = `Best path ${result.best.path} · Route report · SDR Router`;
    document.body.dataset.bestPath = result.best.path; // drawn, buttons wired (tests wait for this)
  }

  main().catch(SDR.showError);
})();
