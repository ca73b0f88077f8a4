// micropacs admin UI: the few behaviours htmx does not give. No inline scripts (the pages'
// Content-Security-Policy allows scripts from this origin only).
"use strict";

// A button with data-opens="ID" opens <dialog id="ID"> instead of following its link; a
// button with data-closes inside a dialog closes it.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-opens]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.opens);
    if (dialog && typeof dialog.showModal === "function") {
      event.preventDefault();
      dialog.showModal();
    }
    return;
  }
  const closer = event.target.closest("[data-closes]");
  if (closer) {
    event.preventDefault();
    closer.closest("dialog").close();
  }
});

// The series preview: one rendered frame per instance, in instance order; arrow keys,
// Page Up/Down, Home/End and the mouse wheel move through them.
function startPreview(root) {
  const frames = JSON.parse(document.getElementById(root.dataset.frames).textContent);
  const image = root.querySelector("img");
  const position = document.getElementById(root.dataset.position);
  const slider = document.getElementById(root.dataset.slider);
  let index = 0;
  const show = (next) => {
    index = Math.max(0, Math.min(frames.length - 1, next));
    image.src = frames[index].url;
    image.alt = `Instance ${frames[index].number} (${index + 1} of ${frames.length})`;
    position.textContent = `${index + 1} / ${frames.length}`;
    root.dataset.index = String(index);
    if (slider) slider.value = String(index);
  };
  const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
  root.addEventListener("keydown", (event) => {
    if (event.key in keys) show(index + keys[event.key]);
    else if (event.key === "Home") show(0);
    else if (event.key === "End") show(frames.length - 1);
    else return;
    event.preventDefault();
  });
  root.addEventListener("wheel", (event) => {
    event.preventDefault();
    show(index + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  if (slider) slider.addEventListener("input", () => show(Number(slider.value)));
  if (frames.length) show(0);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-preview]").forEach(startPreview);
});
