// Field-day import: upload a ZIP or a folder in parts, then follow the background check.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  let chosen = { source: null, files: [] };

  function csrfToken() {
    return document.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  function relativePath(file) {
    return file.webkitRelativePath || file.name;
  }

  function setProgress(stage, fraction) {
    $("gc-import-progress-box").classList.remove("d-none");
    $("gc-import-stage").textContent = stage;
    const percent = Math.round(100 * fraction);
    $("gc-import-bar").style.width = percent + "%";
    $("gc-import-bar").textContent = percent + "%";
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  function report(html, kind) {
    $("gc-import-report").innerHTML = '<div class="alert alert-' + kind + '">' + html + "</div>";
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({ error: "The server answered " + response.status + "." }));
    if (!response.ok) throw new Error(data.error || "The server answered " + response.status + ".");
    return data;
  }

  // One part: bytes [start, end) of the upload, a ZIP as it is or a folder's files one after the other.
  function partBlob(files, offsets, start, end) {
    const pieces = [];
    for (let index = 0; index < files.length; index++) {
      const from = offsets[index];
      const to = from + files[index].size;
      if (to <= start || from >= end) continue;
      pieces.push(files[index].slice(Math.max(start, from) - from, Math.min(end, to) - from));
    }
    return new Blob(pieces);
  }

  // Sends one part with XMLHttpRequest, whose upload events count the bytes as they leave.
  // The part is the request's body as it is: the server reads it without a form to take apart.
  function sendOnce(url, partIndex, blob, onBytes) {
    return new Promise((resolve, reject) => {
      const address = new URL(url, window.location.href);
      address.searchParams.set("part_index", partIndex);
      const request = new XMLHttpRequest();
      request.open("POST", address.toString());
      request.setRequestHeader("X-CSRFToken", csrfToken());
      request.setRequestHeader("Content-Type", "application/octet-stream");
      request.upload.onprogress = (event) => onBytes(Math.min(event.loaded, blob.size));
      request.onload = () => {
        let data = {};
        try { data = JSON.parse(request.responseText); } catch (error) { data = {}; }
        resolve({ status: request.status, data: data });
      };
      request.onerror = () => reject(new Error("The connection to the server was lost."));
      request.send(blob);
    });
  }

  // Returns the parts the server wants next (those holding the rest of a ZIP's directory).
  async function sendPart(url, partIndex, blob, onBytes) {
    for (let attempt = 1; ; attempt++) {
      let answer;
      try {
        answer = await sendOnce(url, partIndex, blob, onBytes);
      } catch (error) {
        if (attempt >= 3) throw error;
        answer = null;
      }
      if (answer && answer.status >= 200 && answer.status < 300) { onBytes(blob.size); return answer.data.wanted || []; }
      if (answer && (answer.status < 500 || attempt >= 3)) {
        const error = new Error(answer.data.error || "Part refused (" + answer.status + ").");
        error.refused = answer.status === 400;
        throw error;
      }
      onBytes(0);
      await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
    }
  }

  async function refreshRecent() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("gc-import-recent");
    if (fresh) $("gc-import-recent").replaceWith(fresh);
  }

  function showFinished(status) {
    $("gc-import-bar").classList.toggle("bg-success", status.status === "done");
    $("gc-import-bar").classList.toggle("bg-danger", status.status !== "done");
    refreshRecent().catch(() => {});
    if (status.status === "done") {
      report(
        "<b>Imported.</b> " + status.images_created + " photo(s) stored, " + status.patients_created +
          ' new patient(s) created. <a href="' + status.patients_url + '">See the patients</a>.',
        "success"
      );
      return;
    }
    const items = status.errors
      .map((error) => "<li><b>" + escapeHtml(error.file) + "</b>: " + escapeHtml(error.reason) + "</li>")
      .join("");
    report(
      "<b>Nothing was imported.</b> " + status.errors.length + " problem(s) to fix, then import again:<ul class='mb-0'>" +
        items + "</ul>",
      "danger"
    );
  }

  // The bar never goes back: the upload fills its first part, the photos prepared the rest.
  const progress = { shown: 0 };
  function showProgress(stage, fraction) {
    progress.shown = Math.max(progress.shown, Math.min(1, fraction));
    setProgress(stage, progress.shown);
  }

  function megabytes(bytes) {
    return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB";
  }

  async function status(statusUrl) {
    const response = await fetch(statusUrl, { credentials: "same-origin" });
    return response.json();
  }

  function stageText(state, sentBytes, totalBytes) {
    const photos = state.files_total
      ? state.files_done + " of " + state.files_total + " photos prepared"
      : state.files_done + " photos prepared";
    if (state.status === "uploading") return "Uploading " + megabytes(sentBytes) + " of " + megabytes(totalBytes) + "; " + photos;
    return state.status_label + ": " + photos;
  }

  // Upload 10 % of the bar, preparing the photos 90 %: preparing is most of the time.
  function fractionOf(state, sentBytes, totalBytes) {
    const sent = totalBytes ? sentBytes / totalBytes : 1;
    const prepared = state && state.files_total ? state.files_done / state.files_total : 0;
    return 0.1 * sent + 0.85 * prepared;
  }

  async function follow(statusUrl, totalBytes) {
    for (;;) {
      const state = await status(statusUrl);
      if (state.finished) {
        showProgress(state.status_label, 1);
        showFinished(state);
        return;
      }
      showProgress(stageText(state, totalBytes, totalBytes), fractionOf(state, totalBytes, totalBytes));
      // Every photo is on the server: "done" is near, and a status answer costs the server a few ms.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  function resetChoice() {
    $("gc-import-zip").value = "";
    $("gc-import-folder").value = "";
    chosen = { source: null, files: [] };
    $("gc-import-chosen").textContent = "";
  }

  async function start() {
    $("gc-import-start").disabled = true;
    $("gc-import-report").innerHTML = "";
    $("gc-import-bar").classList.remove("bg-success", "bg-danger");
    progress.shown = 0;
    const files = chosen.files;
    const totalBytes = files.reduce((sum, file) => sum + file.size, 0);
    showProgress("Starting the upload of " + megabytes(totalBytes), 0);
    let finished = false;
    try {
      const opened = await postJson($("gc-import").dataset.startUrl, {
        source: chosen.source,
        files: files.map((file) => ({ path: relativePath(file), size: file.size })),
      });
      const offsets = [];
      files.reduce((offset, file) => { offsets.push(offset); return offset + file.size; }, 0);
      // A ZIP's directory sits at its end: sent first, it lets the server prepare photos while the rest arrives.
      const order = opened.parts_first.concat(
        Array.from({ length: opened.parts_total }, (_, index) => index).filter((index) => !opened.parts_first.includes(index))
      );
      const sentOf = new Map();
      let latest = null;
      const sentBytes = () => Array.from(sentOf.values()).reduce((sum, bytes) => sum + bytes, 0);
      const redraw = () => showProgress(stageText(latest || { status: "uploading", files_done: 0, files_total: 0 }, sentBytes(), totalBytes), fractionOf(latest, sentBytes(), totalBytes));
      const poller = setInterval(() => {
        status(opened.status_url).then((state) => { latest = state; redraw(); }).catch(() => {});
      }, 1000);
      try {
        const queue = order.slice();
        const sender = async () => {
          while (queue.length) {
            const index = queue.shift();
            const start = index * opened.part_bytes;
            const blob = partBlob(files, offsets, start, Math.min(totalBytes, start + opened.part_bytes));
            const wanted = await sendPart(opened.part_url, index, blob, (bytes) => { sentOf.set(index, bytes); redraw(); });
            for (const part of wanted.slice().reverse()) {  // sent next: the server needs them to start
              const at = queue.indexOf(part);
              if (at > 0) { queue.splice(at, 1); queue.unshift(part); }
            }
          }
        };
        // Three parts in flight: the upload keeps the line busy while the server stores each part.
        await Promise.all([sender(), sender(), sender()]);
      } catch (error) {
        const state = await status(opened.status_url).catch(() => null);
        if (state && state.finished) {  // refused while uploading (a ZIP whose directory breaks a limit)
          showProgress(state.status_label, 1);
          showFinished(state);
          finished = true;
          return;
        }
        throw error;
      } finally {
        clearInterval(poller);
      }
      await postJson(opened.finish_url, {});
      await follow(opened.status_url, totalBytes);
      finished = true;
    } catch (error) {
      report("<b>The import stopped:</b> " + escapeHtml(error.message), "danger");
      $("gc-import-bar").classList.add("bg-danger");
    } finally {
      // A finished or refused import is not sent again by a second click: choose the files anew.
      resetChoice();
      $("gc-import-start").disabled = true;
      if (!finished) $("gc-import-chosen").textContent = "Choose the files again to retry.";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const zip = $("gc-import-zip");
    const folder = $("gc-import-folder");
    zip.addEventListener("change", () => {
      folder.value = "";
      chosen = { source: "zip", files: Array.from(zip.files) };
      $("gc-import-chosen").textContent = zip.files.length ? zip.files[0].name : "";
      $("gc-import-start").disabled = !zip.files.length;
    });
    folder.addEventListener("change", () => {
      zip.value = "";
      const files = Array.from(folder.files);
      chosen = { source: "folder", files: files };
      $("gc-import-chosen").textContent = files.length + " file(s) in the folder";
      $("gc-import-start").disabled = !files.length;
    });
    $("gc-import-start").addEventListener("click", start);
  });
})();
