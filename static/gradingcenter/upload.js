// Patient page: drop photos onto the upload field and see the upload's progress.
(function () {
  "use strict";

  function describe(files) {
    if (!files.length) return "Drop photos here, or click to choose them.";
    let bytes = 0;
    for (const file of files) bytes += file.size;
    const size = bytes < 1048576 ? Math.ceil(bytes / 1024) + " KB" : (bytes / 1048576).toFixed(1) + " MB";
    return files.length + " photo(s) chosen, " + size;
  }

  function setUpDropZone(input) {
    const zone = document.createElement("div");
    zone.className = "gc-dropzone";
    zone.id = "gc-dropzone";
    zone.innerHTML = '<i class="fas fa-cloud-upload-alt fa-2x"></i><div class="gc-file-list"></div>';
    const list = zone.querySelector(".gc-file-list");
    list.textContent = describe(input.files);
    input.parentNode.insertBefore(zone, input);
    zone.addEventListener("click", () => input.click());
    ["dragenter", "dragover"].forEach((name) =>
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("gc-dragover");
      })
    );
    ["dragleave", "drop"].forEach((name) =>
      zone.addEventListener(name, () => zone.classList.remove("gc-dragover"))
    );
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      input.files = event.dataTransfer.files;
      list.textContent = describe(input.files);
    });
    input.addEventListener("change", () => (list.textContent = describe(input.files)));
  }

  function uploadWithProgress(form, input) {
    form.addEventListener("submit", (event) => {
      if (!input.files.length || !window.FormData) return;
      event.preventDefault();
      const data = new FormData(form);
      if (event.submitter && event.submitter.name) data.append(event.submitter.name, event.submitter.value);
      const box = document.getElementById("gc-upload-progress");
      const bar = document.getElementById("gc-upload-progress-bar");
      const text = document.getElementById("gc-upload-progress-text");
      box.classList.remove("d-none");
      form.querySelectorAll("[type=submit]").forEach((button) => (button.disabled = true));
      const request = new XMLHttpRequest();
      request.open("POST", form.action || window.location.href);
      request.upload.addEventListener("progress", (progress) => {
        if (!progress.lengthComputable) return;
        const percent = Math.round((100 * progress.loaded) / progress.total);
        bar.style.width = percent + "%";
        bar.textContent = percent + "%";
        text.textContent = percent < 100 ? "Uploading " + input.files.length + " photo(s)…" : "Checking the photos…";
      });
      request.addEventListener("load", () => {
        // The request followed the redirect itself and holds the page with its messages:
        // show that page under its own address instead of loading it again.
        if (request.responseURL && request.responseURL !== window.location.href) {
          window.history.replaceState(null, "", request.responseURL);
        }
        document.open();
        document.write(request.responseText);
        document.close();
      });
      request.addEventListener("error", () => {
        text.textContent = "The upload failed: the connection was lost. Nothing was stored; try again.";
        bar.classList.add("bg-danger");
        form.querySelectorAll("[type=submit]").forEach((button) => (button.disabled = false));
      });
      request.send(data);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const input = document.querySelector("input.gc-upload-input");
    const form = input && input.form;
    if (!form) return;
    setUpDropZone(input);
    uploadWithProgress(form, input);
  });
})();
