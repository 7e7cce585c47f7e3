// The rater's slab viewer: one slice of the rated slab at a time, drawn from the case's sprite
// sheet (every slice in every display window, laid out as `layout` says). Mouse wheel, arrow
// keys, Page Up/Down, Home/End and the slider scroll; buttons or keys 1..n switch the window.
// Everything it shows comes in the sprite bytes; it sends nothing back.
"use strict";
(function () {
  const root = document.getElementById("root");
  root.innerHTML = `
    <div class="slab" tabindex="0" aria-label="Case images: scroll to move through the slices">
      <div class="bar">
        <div class="windows" role="group" aria-label="Window"></div>
        <span class="readout" data-testid="slab-index" aria-live="polite"></span>
      </div>
      <div class="stage"><canvas></canvas></div>
      <div class="bar">
        <input type="range" class="slider" min="1" value="1" aria-label="Slice">
        <span class="hint">Scroll: mouse wheel or ↑ ↓ · Window: keys 1–<span class="nwin"></span></span>
      </div>
    </div>`;
  const box = root.querySelector(".slab");
  const stage = root.querySelector(".stage");
  const canvas = root.querySelector("canvas");
  const slider = root.querySelector(".slider");
  const readout = root.querySelector(".readout");
  const buttons = root.querySelector(".windows");
  const state = { token: null, bitmap: null, layout: null, slice: 0, window: 0, minHeight: 360 };

  function draw() {
    const L = state.layout;
    if (!L || !state.bitmap) return;
    const k = state.window * L.slices + state.slice;
    const sx = (k % L.cols) * L.tile_w;
    const sy = Math.floor(k / L.cols) * L.tile_h;
    const scale = Math.min(stage.clientWidth / L.tile_w, stage.clientHeight / L.tile_h);
    const w = Math.max(1, Math.floor(L.tile_w * scale));
    const h = Math.max(1, Math.floor(L.tile_h * scale));
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.bitmap, sx, sy, L.tile_w, L.tile_h, 0, 0, canvas.width, canvas.height);
    readout.textContent = `Slice ${state.slice + 1} / ${L.slices} · ${L.labels[state.window]}`;
    slider.value = String(state.slice + 1);
    buttons.querySelectorAll("button").forEach((b, i) => {
      b.setAttribute("aria-pressed", i === state.window ? "true" : "false");
    });
  }

  function goTo(slice) {
    if (!state.layout) return;
    state.slice = Math.min(state.layout.slices - 1, Math.max(0, slice));
    draw();
  }

  function setWindow(i) {
    if (!state.layout || i < 0 || i >= state.layout.windows.length) return;
    state.window = i;
    draw();
  }

  function fit() {
    const room = synthct.roomBelow(state.minHeight) - state.bottomMargin;
    const height = Math.max(state.minHeight, Math.floor(room));
    synthct.setFrameHeight(height);
    const bars = Array.from(root.querySelectorAll(".bar")).reduce((s, b) => s + b.offsetHeight, 0);
    stage.style.height = Math.max(120, height - bars - 8) + "px";
    draw();
  }

  let wheelRest = 0;
  box.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault(); // the page never scrolls under the image
      const lines = e.deltaMode === 1 ? e.deltaY : e.deltaY / 40;
      wheelRest += lines;
      const steps = Math.trunc(wheelRest / 1.5) || (Math.abs(lines) >= 1.5 ? Math.sign(lines) : 0);
      if (steps !== 0) {
        wheelRest = 0;
        goTo(state.slice + steps);
      }
    },
    { passive: false }
  );
  box.addEventListener("keydown", (e) => {
    const L = state.layout;
    if (!L) return;
    const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -5, PageDown: 5 }[e.key];
    if (e.target === slider && (e.key === "ArrowLeft" || e.key === "ArrowRight")) return;
    if (step) goTo(state.slice + step);
    else if (e.key === "Home") goTo(0);
    else if (e.key === "End") goTo(L.slices - 1);
    else if (/^[1-9]$/.test(e.key)) setWindow(Number(e.key) - 1);
    else return;
    e.preventDefault();
  });
  box.addEventListener("mouseenter", () => {
    // Hovering the image lets the wheel and the keys work at once, unless the rater is typing.
    let typing = false;
    try {
      const active = window.parent.document.activeElement;
      typing = !!active && (active.tagName === "TEXTAREA" || active.tagName === "INPUT");
    } catch (e) {
      typing = false;
    }
    if (!typing) box.focus({ preventScroll: true });
  });
  slider.addEventListener("input", () => goTo(Number(slider.value) - 1));
  window.addEventListener("resize", fit);

  synthct.onRender(async (args, theme) => {
    synthct.applyTheme(theme);
    state.minHeight = args.min_height || 360;
    state.bottomMargin = args.bottom_margin || 0;
    if (args.token !== state.token) {
      const L = args.layout;
      const blob = new Blob([args.sprite], { type: "image/png" });
      const bitmap = await createImageBitmap(blob);
      state.token = args.token;
      state.layout = L;
      state.bitmap = bitmap;
      state.slice = Math.floor((L.slices - 1) / 2);
      state.window = 0;
      slider.max = String(L.slices);
      root.querySelector(".nwin").textContent = String(L.windows.length);
      buttons.innerHTML = "";
      L.labels.forEach((label, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.title = `${label} (key ${i + 1})`;
        b.addEventListener("click", () => {
          setWindow(i);
          box.focus({ preventScroll: true });
        });
        buttons.appendChild(b);
      });
    }
    fit();
  });
})();
