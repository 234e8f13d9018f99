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

  async function sendPart(url, fileIndex, partIndex, blob) {
    for (let attempt = 1; ; attempt++) {
      const form = new FormData();
      form.append("file_index", fileIndex);
      form.append("part_index", partIndex);
      form.append("data", blob, "part");
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: { "X-CSRFToken": csrfToken() },
          body: form,
          credentials: "same-origin",
        });
        if (response.ok) return;
        const data = await response.json().catch(() => ({}));
        if (response.status < 500 || attempt >= 3) throw new Error(data.error || "Part refused (" + response.status + ").");
      } catch (error) {
        if (attempt >= 3) throw error;
      }
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

  async function follow(statusUrl) {
    for (;;) {
      const response = await fetch(statusUrl, { credentials: "same-origin" });
      const status = await response.json();
      const total = status.files_total || 1;
      setProgress(status.status_label + " (" + status.files_done + " of " + status.files_total + " files)", status.files_done / total);
      if (status.finished) {
        setProgress(status.status_label, 1);
        showFinished(status);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }

  async function start() {
    $("gc-import-start").disabled = true;
    $("gc-import-report").innerHTML = "";
    try {
      const files = chosen.files;
      const opened = await postJson($("gc-import").dataset.startUrl, {
        source: chosen.source,
        files: files.map((file) => ({ path: relativePath(file), size: file.size })),
      });
      const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
      let sent = 0;
      for (let index = 0; index < files.length; index++) {
        const file = files[index];
        const parts = opened.files[index].parts;
        for (let part = 0; part < parts; part++) {
          const blob = file.slice(part * opened.part_bytes, (part + 1) * opened.part_bytes);
          await sendPart(opened.part_url, index, part, blob);
          sent += blob.size;
          setProgress("Uploading " + (sent / 1048576).toFixed(0) + " of " + (total / 1048576).toFixed(0) + " MB", sent / total);
        }
      }
      setProgress("Waiting to be processed", 0);
      await postJson(opened.finish_url, {});
      await follow(opened.status_url);
    } catch (error) {
      report("<b>The import stopped:</b> " + escapeHtml(error.message), "danger");
    } finally {
      $("gc-import-start").disabled = chosen.files.length === 0;
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
