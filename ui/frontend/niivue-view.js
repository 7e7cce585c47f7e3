// Browse's medical viewer: one or two CT volumes (with their tumour masks) in NiiVue, the
// imaging community's WebGL viewer (vendor/niivue.umd.js, from the npm package @niivue/niivue).
// Multiplanar + 3D render, wheel scroll, zoom and pan, drag window/level with CT presets, mask
// overlay with opacity and colour, HU readout, and linked views: with "Link views" on, scrolling,
// clicking, zooming, windowing or turning the 3D render in one view does the same in the other
// (positions are shared as fractions of each volume, so grids of different sizes follow too).
// The volumes arrive as NIfTI bytes in the component's arguments; nothing is fetched.
"use strict";
(function () {
  const NV = window.niivue;
  const root = document.getElementById("root");
  const VIEWS = {
    axial: NV.SLICE_TYPE.AXIAL,
    coronal: NV.SLICE_TYPE.CORONAL,
    sagittal: NV.SLICE_TYPE.SAGITTAL,
    mpr: NV.SLICE_TYPE.MULTIPLANAR,
    render: NV.SLICE_TYPE.RENDER,
  };
  const VIEW_LABELS = { axial: "Axial", coronal: "Coronal", sagittal: "Sagittal", mpr: "MPR + 3D", render: "3D" };
  const COLOURS = { red: "Red", green: "Green", blue: "Blue", redyell: "Yellow", violet: "Violet" };
  const MOUSE = {
    leftButton: { primary: NV.DRAG_MODE.crosshair, withShift: NV.DRAG_MODE.pan, withCtrl: NV.DRAG_MODE.windowing },
    rightButton: NV.DRAG_MODE.windowing,
    centerButton: NV.DRAG_MODE.pan,
  };

  root.innerHTML = `
    <div class="nv">
      <div class="bar tools">
        <div class="group" role="group" aria-label="View" data-testid="nv-views"></div>
        <div class="group" role="group" aria-label="Window" data-testid="nv-presets"></div>
        <span class="wl" data-testid="nv-window"></span>
      </div>
      <div class="bar tools">
        <label><input type="checkbox" class="mask-on" checked> Mask</label>
        <label>Opacity <input type="range" class="opacity" min="0" max="1" step="0.05" aria-label="Mask opacity"></label>
        <label>Colour <select class="colour" aria-label="Mask colour"></select></label>
        <label><input type="checkbox" class="outline"> Outline only</label>
        <label class="link-box"><input type="checkbox" class="link" checked> Link views</label>
        <button type="button" class="zoom-in" title="Zoom in (Ctrl + wheel)">+</button>
        <button type="button" class="zoom-out" title="Zoom out (Ctrl + wheel)">−</button>
        <button type="button" class="reset" title="Reset zoom, pan and window">Reset</button>
      </div>
      <div class="panes"></div>
      <div class="hint">Wheel: scroll slices · Left-click: crosshair and HU · Right-drag (or Ctrl + drag):
        window/level · Middle-drag (or Shift + drag): pan · Ctrl + wheel: zoom · Double-click: automatic window</div>
    </div>`;
  const panes = root.querySelector(".panes");
  const wlText = root.querySelector(".wl");
  const ui = {
    maskOn: root.querySelector(".mask-on"),
    opacity: root.querySelector(".opacity"),
    colour: root.querySelector(".colour"),
    outline: root.querySelector(".outline"),
    link: root.querySelector(".link"),
  };
  Object.entries(COLOURS).forEach(([value, label]) => {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    ui.colour.appendChild(o);
  });

  const state = { token: null, views: [], presets: [], view: "mpr", syncing: false, minHeight: 480 };

  function hasWebGL2() {
    try {
      return !!document.createElement("canvas").getContext("webgl2");
    } catch (e) {
      return false;
    }
  }

  function sliceIndex(frac, n) {
    return Math.min(n - 1, Math.max(0, Math.round(frac * n - 0.5)));
  }

  function formatHU(v) {
    return Number.isFinite(v) ? Math.round(v).toString() : "–";
  }

  // The readout under a view: 1-based slice numbers of the crosshair in each plane, its HU and
  // whether it lies in the tumour mask.
  function updateReadout(view, loc) {
    const nv = view.nv;
    const vol = nv.volumes[0];
    if (!vol) return;
    const dims = vol.dimsRAS; // [3, nx, ny, nz] in RAS order
    const f = nv.scene.crosshairPos;
    const sag = sliceIndex(f[0], dims[1]);
    const cor = sliceIndex(f[1], dims[2]);
    const ax = sliceIndex(f[2], dims[3]);
    const values = loc && loc.values ? loc.values : [];
    const hu = values.length ? values[0].value : NaN;
    const inMask = values.length > 1 ? values[1].value >= 0.5 : false;
    view.readout.textContent =
      `Axial ${ax + 1}/${dims[3]} · Coronal ${cor + 1}/${dims[2]} · Sagittal ${sag + 1}/${dims[1]}` +
      ` · HU ${formatHU(hu)}` + (nv.volumes.length > 1 ? (inMask ? " · tumour" : "") : "");
    view.readout.dataset.axial = String(ax + 1);
    view.readout.dataset.coronal = String(cor + 1);
    view.readout.dataset.sagittal = String(sag + 1);
    view.readout.dataset.hu = formatHU(hu);
  }

  function updateWindowText() {
    const nv = state.views.length ? state.views[0].nv : null;
    if (!nv || !nv.volumes.length) return;
    const v = nv.volumes[0];
    const w = v.cal_max - v.cal_min;
    const l = (v.cal_max + v.cal_min) / 2;
    wlText.textContent = `W ${Math.round(w)} · L ${Math.round(l)}`;
    wlText.dataset.width = String(Math.round(w));
    wlText.dataset.level = String(Math.round(l));
    root.querySelectorAll('[data-testid="nv-presets"] button').forEach((b) => {
      const p = state.presets[Number(b.dataset.i)];
      b.setAttribute("aria-pressed", Math.abs(p.width - w) < 0.5 && Math.abs(p.level - l) < 0.5 ? "true" : "false");
    });
  }

  function others(view) {
    return ui.link.checked ? state.views.filter((v) => v !== view) : [];
  }

  // Copy what the user changed in `view` to the other view (position, zoom/pan, window, 3D angle).
  function propagate(view, what) {
    if (state.syncing) return;
    state.syncing = true;
    try {
      for (const other of others(view)) {
        const a = view.nv;
        const b = other.nv;
        if (!b.volumes.length) continue;
        if (what.position) {
          b.scene.crosshairPos = Float32Array.from(a.scene.crosshairPos);
          b.scene.pan2Dxyzmm = Float32Array.from(a.scene.pan2Dxyzmm);
        }
        if (what.window) {
          b.volumes[0].cal_min = a.volumes[0].cal_min;
          b.volumes[0].cal_max = a.volumes[0].cal_max;
          b.updateGLVolume();
        }
        if (what.render) {
          b.scene.renderAzimuth = a.scene.renderAzimuth;
          b.scene.renderElevation = a.scene.renderElevation;
          b.scene.volScaleMultiplier = a.scene.volScaleMultiplier;
        }
        b.drawScene();
        if (what.position) b.createOnLocationChange();
      }
    } finally {
      state.syncing = false;
    }
  }

  function applyPreset(i) {
    const p = state.presets[i];
    for (const view of state.views) {
      const vol = view.nv.volumes[0];
      if (!vol) continue;
      vol.cal_min = p.level - p.width / 2;
      vol.cal_max = p.level + p.width / 2;
      view.nv.updateGLVolume();
    }
    updateWindowText();
  }

  function applyMask() {
    for (const view of state.views) {
      const nv = view.nv;
      if (nv.volumes.length < 2) continue;
      const mask = nv.volumes[1];
      mask.colormap = ui.colour.value;
      mask.cal_min = 0.5;
      mask.cal_max = 1;
      mask.opacity = ui.maskOn.checked ? Number(ui.opacity.value) : 0;
      nv.overlayOutlineWidth = ui.outline.checked ? 2 : 0;
      nv.updateGLVolume();
    }
  }

  function setView(name) {
    state.view = name;
    for (const view of state.views) view.nv.setSliceType(VIEWS[name]);
    root.querySelectorAll('[data-testid="nv-views"] button').forEach((b) => {
      b.setAttribute("aria-pressed", b.dataset.view === name ? "true" : "false");
    });
  }

  function zoomBy(view, factor) {
    const z = Math.min(10, Math.max(0.5, view.nv.scene.pan2Dxyzmm[3] * factor));
    view.nv.scene.pan2Dxyzmm[3] = z;
    view.nv.drawScene();
    propagate(view, { position: true });
  }

  function buildToolbar(args) {
    const views = root.querySelector('[data-testid="nv-views"]');
    views.innerHTML = "";
    Object.entries(VIEW_LABELS).forEach(([name, label]) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.dataset.view = name;
      b.addEventListener("click", () => setView(name));
      views.appendChild(b);
    });
    const presets = root.querySelector('[data-testid="nv-presets"]');
    presets.innerHTML = "";
    state.presets.forEach((p, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = p.label;
      b.title = `W ${p.width} · L ${p.level}`;
      b.dataset.i = String(i);
      b.addEventListener("click", () => applyPreset(i));
      presets.appendChild(b);
    });
    ui.opacity.value = String(args.opacity);
    ui.colour.value = args.colour;
    ui.link.parentElement.style.display = args.views.length > 1 ? "" : "none";
  }

  async function makeView(meta, image, mask, i) {
    const pane = document.createElement("div");
    pane.className = "pane";
    pane.innerHTML = `<div class="title"></div><div class="canvas-box"><canvas tabindex="0"></canvas></div>
      <div class="readout" data-testid="nv-readout-${i}" aria-live="polite"></div>`;
    pane.querySelector(".title").textContent = meta.title;
    panes.appendChild(pane);
    const canvas = pane.querySelector("canvas");
    const nv = new NV.Niivue({
      backColor: [0, 0, 0, 1],
      isRadiologicalConvention: true,
      isOrientationTextVisible: true,
      show3Dcrosshair: true,
      multiplanarShowRender: NV.SHOW_RENDER.ALWAYS,
      multiplanarLayout: NV.MULTIPLANAR_TYPE.GRID,
      dragAndDropEnabled: false,
      logLevel: "warn",
      loadingText: "",
      crosshairColor: [0.2, 0.8, 1, 0.7],
      crosshairGap: 8,
      crosshairWidth: 0.5,
      mouseEventConfig: MOUSE,
    });
    const view = { nv, pane, readout: pane.querySelector(".readout"), canvas };
    await nv.attachToCanvas(canvas);
    await nv.loadFromArrayBuffer(image.buffer.slice(image.byteOffset, image.byteOffset + image.byteLength), "image.nii.gz");
    if (mask) {
      await nv.loadFromArrayBuffer(mask.buffer.slice(mask.byteOffset, mask.byteOffset + mask.byteLength), "mask.nii.gz");
    }
    nv.setSliceType(VIEWS[state.view]);
    const vol = nv.volumes[0];
    const dims = vol.dimsRAS;
    const start = meta.start || [dims[1] >> 1, dims[2] >> 1, dims[3] >> 1];
    nv.scene.crosshairPos = Float32Array.from([(start[0] + 0.5) / dims[1], (start[1] + 0.5) / dims[2], (start[2] + 0.5) / dims[3]]);
    nv.onLocationChange = (loc) => {
      updateReadout(view, loc);
      propagate(view, { position: true });
    };
    nv.onIntensityChange = () => {
      updateWindowText();
      propagate(view, { window: true });
    };
    nv.scene.onAzimuthElevationChange = () => propagate(view, { render: true });
    // Drag windowing changes cal_min/cal_max without an event: follow the mouse while it is down.
    canvas.addEventListener("pointermove", (e) => {
      if (e.buttons) {
        updateWindowText();
        propagate(view, { window: true, render: true });
      }
    });
    canvas.addEventListener("pointerup", () => {
      updateWindowText();
      propagate(view, { window: true, render: true });
    });
    canvas.addEventListener("mouseenter", () => canvas.focus({ preventScroll: true }));
    // Ctrl + wheel (and a trackpad pinch) zooms; the plain wheel scrolls slices (NiiVue's own).
    canvas.addEventListener(
      "wheel",
      (e) => {
        if (!e.ctrlKey) return;
        e.preventDefault();
        e.stopImmediatePropagation();
        zoomBy(view, e.deltaY < 0 ? 1.1 : 1 / 1.1);
      },
      { capture: true, passive: false }
    );
    return view;
  }

  function fit() {
    const room = synthct.roomBelow(state.minHeight) - 16;
    const height = Math.max(state.minHeight, Math.floor(room));
    synthct.setFrameHeight(height);
    const used = Array.from(root.querySelectorAll(".bar, .hint")).reduce((s, b) => s + b.offsetHeight, 0);
    const paneHeight = Math.max(200, height - used - 12);
    for (const view of state.views) {
      const title = view.pane.querySelector(".title").offsetHeight;
      const read = view.readout.offsetHeight || 20;
      view.pane.querySelector(".canvas-box").style.height = Math.max(160, paneHeight - title - read - 6) + "px";
      view.nv.resizeListener();
    }
  }

  async function load(args) {
    for (const view of state.views) view.nv.cleanup && view.nv.cleanup();
    state.views = [];
    panes.innerHTML = "";
    state.presets = args.presets;
    buildToolbar(args);
    panes.style.gridTemplateColumns = `repeat(${args.views.length}, minmax(0, 1fr))`;
    for (let i = 0; i < args.views.length; i++) {
      state.views.push(await makeView(args.views[i], args[`image${i}`], args[`mask${i}`], i));
    }
    setView(args.view || "mpr");
    applyPreset(args.preset || 0);
    applyMask();
    fit();
    for (const view of state.views) {
      view.nv.drawScene();
      view.nv.createOnLocationChange();
    }
    root.dataset.ready = "true";
  }

  root.querySelectorAll(".reset").forEach((b) =>
    b.addEventListener("click", () => {
      for (const view of state.views) {
        view.nv.scene.pan2Dxyzmm = Float32Array.from([0, 0, 0, 1]);
        view.nv.drawScene();
      }
      applyPreset(0);
    })
  );
  root.querySelector(".zoom-in").addEventListener("click", () => state.views.forEach((v) => zoomBy(v, 1.25)));
  root.querySelector(".zoom-out").addEventListener("click", () => state.views.forEach((v) => zoomBy(v, 1 / 1.25)));
  [ui.maskOn, ui.opacity, ui.colour, ui.outline].forEach((el) => el.addEventListener("input", applyMask));
  window.addEventListener("resize", fit);

  synthct.onRender(async (args, theme) => {
    synthct.applyTheme(theme);
    state.minHeight = args.min_height || 480;
    if (!hasWebGL2()) {
      root.innerHTML =
        '<p class="nogl">This browser has no WebGL 2, which the 3D viewer needs. Choose ' +
        "<b>Slices (PNG)</b> above to browse the cases without it.</p>";
      synthct.setFrameHeight(80);
      return;
    }
    if (args.token !== state.token) {
      state.token = args.token;
      root.dataset.ready = "false";
      await load(args);
    } else {
      fit();
    }
  });
})();
