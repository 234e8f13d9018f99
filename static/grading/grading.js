// The grading page: keyboard-first answers and a photo viewer with zoom, pan, brightness and contrast.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("gc-form");
    if (!form) return;
    const fields = Array.from(document.querySelectorAll(".gc-field"));
    const note = document.getElementById("gc-note");
    const save = document.getElementById("gc-save");
    const announce = document.getElementById("gc-announce");
    let current = 0;

    function focusField(index) {
      if (!fields.length) return;
      current = Math.max(0, Math.min(fields.length - 1, index));
      fields.forEach((field, i) => field.classList.toggle("gc-focused", i === current));
      fields[current].focus({ preventScroll: false });
      showEyeOf(fields[current]);
    }

    // A per-eye form answers for one eye: the viewer follows it to that eye's photos.
    function showEyeOf(field) {
      const eye = field && field.dataset.eye;
      if (!eye || !strip.length || strip[photo].dataset.eyeCode === eye) return;
      const first = strip.findIndex((item) => item.dataset.eyeCode === eye);
      if (first >= 0) showPhoto(first);
    }

    function choose(number) {
      const field = fields[current];
      if (!field) return;
      const options = field.querySelectorAll("input[type=radio]");
      if (number < 1 || number > options.length) return;
      options[number - 1].checked = true;
      answered(field);
      if (announce) {
        announce.textContent = (field.dataset.label || field.dataset.name) + ": " +
          options[number - 1].closest("label").textContent.trim().replace(/^\d+\s*/, "");
      }
      if (current < fields.length - 1) focusField(current + 1);
      else {
        fields.forEach((f) => f.classList.remove("gc-focused"));
        save.focus();
      }
    }

    // An answered field drops its "is required." message, the server's as well as ours.
    function answered(field) {
      field.classList.remove("gc-invalid");
      field.removeAttribute("aria-invalid");
      field.removeAttribute("aria-describedby");
      field.querySelectorAll(".gc-error").forEach((message) => message.remove());
    }

    function firstUnanswered() {
      return fields.findIndex((field) => !field.querySelector("input:checked"));
    }

    fields.forEach((field, index) => {
      // focusin, not focus: it also fires when a radio inside the field is clicked.
      field.addEventListener("focusin", () => {
        current = index;
        fields.forEach((f, i) => f.classList.toggle("gc-focused", i === index));
        showEyeOf(field);
      });
      field.addEventListener("change", () => answered(field));
    });

    // Viewer ------------------------------------------------------------
    const viewer = document.getElementById("gc-viewer");
    const main = document.getElementById("gc-main");
    const strip = Array.from(document.querySelectorAll(".gc-strip-item"));
    const brightness = document.getElementById("gc-brightness");
    const contrast = document.getElementById("gc-contrast");
    let view = { scale: 1, x: 0, y: 0 };
    let photo = 0;

    function render() {
      if (!main) return;
      main.style.transform = `translate(calc(-50% + ${view.x}px), calc(-50% + ${view.y}px)) scale(${view.scale})`;
      main.style.filter = `brightness(${brightness.value}%) contrast(${contrast.value}%)`;
    }

    function zoom(factor) {
      view.scale = Math.max(1, Math.min(12, view.scale * factor));
      if (view.scale === 1) view = { scale: 1, x: 0, y: 0 };
      render();
    }

    function showPhoto(index) {
      if (!strip.length) return;
      photo = (index + strip.length) % strip.length;
      const item = strip[photo];
      main.src = item.dataset.src;
      main.alt = item.dataset.eye + " eye";
      document.getElementById("gc-eye").textContent = item.dataset.eye + " eye";
      document.getElementById("gc-image-count").textContent = "photo " + (photo + 1) + " of " + strip.length;
      strip.forEach((s, i) => s.classList.toggle("active", i === photo));
      view = { scale: 1, x: 0, y: 0 };
      render();
    }

    function light(input, step) {
      input.value = Math.max(+input.min, Math.min(+input.max, +input.value + step));
      render();
    }

    if (viewer && main) {
      strip.forEach((item, index) => item.addEventListener("click", () => showPhoto(index)));
      [brightness, contrast].forEach((input) => input.addEventListener("input", render));
      document.querySelectorAll("[data-action]").forEach((button) =>
        button.addEventListener("click", () => {
          const action = button.dataset.action;
          if (action === "zoom-in") zoom(1.25);
          if (action === "zoom-out") zoom(0.8);
          if (action === "reset") zoom(0);
          if (action === "reset-light") {
            brightness.value = contrast.value = 100;
            render();
          }
        })
      );
      viewer.addEventListener("wheel", (event) => {
        event.preventDefault();
        zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15);
      }, { passive: false });
      let drag = null;
      viewer.addEventListener("pointerdown", (event) => {
        drag = { x: event.clientX - view.x, y: event.clientY - view.y };
        viewer.classList.add("gc-dragging");
        viewer.setPointerCapture(event.pointerId);
      });
      viewer.addEventListener("pointermove", (event) => {
        if (!drag) return;
        view.x = event.clientX - drag.x;
        view.y = event.clientY - drag.y;
        render();
      });
      ["pointerup", "pointercancel"].forEach((name) =>
        viewer.addEventListener(name, () => {
          drag = null;
          viewer.classList.remove("gc-dragging");
        })
      );
      viewer.addEventListener("dblclick", () => zoom(0));
      render();
    }

    // Keyboard ----------------------------------------------------------
    let submitting = false;
    form.addEventListener("submit", (event) => {
      const missing = fields.findIndex(
        (field) => field.dataset.required === "1" && !field.querySelector("input:checked")
      );
      if (missing >= 0) {
        event.preventDefault();
        const field = fields[missing];
        field.classList.add("gc-invalid");
        field.setAttribute("aria-invalid", "true");
        if (!field.querySelector(".gc-error")) {
          const message = document.createElement("div");
          message.className = "text-danger small gc-error gc-client-error";
          message.id = "gc-error-" + field.querySelector("input[type=radio]").name;
          message.textContent = (field.dataset.label || field.dataset.name) + " is required.";
          field.appendChild(message);
          field.setAttribute("aria-describedby", message.id);
        }
        focusField(missing);
        return;
      }
      if (submitting) {
        event.preventDefault(); // one click, one grade
        return;
      }
      submitting = true;
      save.disabled = true;
    });

    document.addEventListener("keydown", (event) => {
      const typing = event.target === note || (event.target.tagName === "INPUT" && event.target.type !== "radio");
      if (typing) {
        if (event.key === "Escape") {
          event.preventDefault();
          note.blur();
          focusField(current);
        } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          form.requestSubmit();
        }
        return;
      }
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      const key = event.key;
      // A held key must not answer every field (or save twice).
      if (event.repeat && (/^[1-9]$/.test(key) || key === "Enter")) {
        event.preventDefault();
        return;
      }
      const inField = Boolean(event.target.closest && event.target.closest(".gc-field"));
      if (key === "Tab" && !(inField && current + (event.shiftKey ? -1 : 1) >= 0 && current + (event.shiftKey ? -1 : 1) < fields.length)) {
        return; // Tab leaves the fields for the note, the save button and the page
      }
      if (/^[1-9]$/.test(key)) {
        if (event.target === save) return;
        choose(Number(key));
      } else if (key === "ArrowDown" || (key === "Tab" && !event.shiftKey)) focusField(current + 1);
      else if (key === "ArrowUp" || (key === "Tab" && event.shiftKey)) focusField(current - 1);
      else if (key === "ArrowRight" || key === "]") showPhoto(photo + 1);
      else if (key === "ArrowLeft" || key === "[") showPhoto(photo - 1);
      else if (key === "+" || key === "=") zoom(1.25);
      else if (key === "-") zoom(0.8);
      else if (key === "0") zoom(0);
      else if (key === "b") light(brightness, 10);
      else if (key === "B") light(brightness, -10);
      else if (key === "c") light(contrast, 10);
      else if (key === "C") light(contrast, -10);
      else if (key === "r") {
        brightness.value = contrast.value = 100;
        render();
      } else if (key === "n") note.focus();
      else if (key === "Enter") form.requestSubmit();
      else return;
      event.preventDefault();
    });

    // While the page stays open it keeps holding the patient's slot (others get other patients).
    const root = document.getElementById("gc-grading");
    if (root && root.dataset.keepUrl) {
      const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      const keep = () =>
        fetch(root.dataset.keepUrl, { method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin" })
          .catch(() => {});
      setInterval(keep, Number(root.dataset.keepSeconds || 300) * 1000);
    }

    const unanswered = firstUnanswered();
    const invalid = fields.findIndex((field) => field.classList.contains("gc-invalid"));
    focusField(invalid >= 0 ? invalid : unanswered >= 0 ? unanswered : 0);
  });
})();
