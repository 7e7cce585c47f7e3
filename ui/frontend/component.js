// The Streamlit custom-component protocol (components v1), without any library: the frame says
// it is ready, Streamlit posts "streamlit:render" messages with the arguments (bytes arrive as
// Uint8Array), and the frame may set its own height. Nothing here talks to anything but the
// parent window, and every script loads from this folder on the app's own server.
"use strict";
window.synthct = (function () {
  const listeners = [];
  let lastHeight = -1;

  function send(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  }

  function setFrameHeight(height) {
    const h = Math.max(0, Math.round(height));
    if (h !== lastHeight) {
      lastHeight = h;
      send("streamlit:setFrameHeight", { height: h });
    }
  }

  function setValue(value) {
    send("streamlit:setComponentValue", { value: value, dataType: "json" });
  }

  // Height left in the browser window below this frame's top edge (the frame shares the app's
  // origin, so the parent's size can be read); `fallback` when it cannot be.
  function roomBelow(fallback) {
    try {
      const top = window.frameElement.getBoundingClientRect().top;
      return window.parent.innerHeight - top;
    } catch (e) {
      return fallback;
    }
  }

  function loadScripts(urls) {
    return urls.reduce(
      (chain, url) =>
        chain.then(
          () =>
            new Promise((resolve, reject) => {
              const s = document.createElement("script");
              s.src = url;
              s.onload = resolve;
              s.onerror = () => reject(new Error("could not load " + url));
              document.head.appendChild(s);
            })
        ),
      Promise.resolve()
    );
  }

  function onRender(fn) {
    listeners.push(fn);
  }

  function start(scriptsByKind) {
    let loading = null;
    let pending = null;
    window.addEventListener("message", (event) => {
      const msg = event.data;
      if (!msg || msg.type !== "streamlit:render" || event.source !== window.parent) return;
      pending = msg;
      if (!loading) {
        const scripts = scriptsByKind[msg.args.kind];
        if (!scripts) {
          document.getElementById("root").textContent = "Unknown viewer " + msg.args.kind;
          return;
        }
        loading = loadScripts(scripts).catch((err) => {
          document.getElementById("root").textContent = String(err);
        });
      }
      loading.then(() => {
        if (pending === msg) listeners.forEach((fn) => fn(msg.args, msg.theme || {}));
      });
    });
    send("streamlit:componentReady", { apiVersion: 1 });
  }

  function applyTheme(theme) {
    const root = document.documentElement.style;
    if (theme.primaryColor) root.setProperty("--primary", theme.primaryColor);
    if (theme.backgroundColor) root.setProperty("--bg", theme.backgroundColor);
    if (theme.secondaryBackgroundColor) root.setProperty("--bg2", theme.secondaryBackgroundColor);
    if (theme.textColor) root.setProperty("--text", theme.textColor);
    if (theme.font) root.setProperty("--font", theme.font);
  }

  return { start, onRender, setFrameHeight, setValue, roomBelow, applyTheme };
})();
