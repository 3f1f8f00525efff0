// Calculator UI: keeps the operands here, asks the server to evaluate.
"use strict";

(() => {
  const SYMBOLS = { "+": "+", "-": "−", "*": "×", "/": "÷" };
  const MAX_DIGITS = 15; // what a double holds faithfully, like the server's rounding
  const KEYBOARD = {
    Enter: "=", "=": "=", Escape: "C", Delete: "C", c: "C", C: "C",
    x: "*", X: "*", ",": ".", Backspace: "Backspace",
  };

  const $ = (id) => document.getElementById(id);
  const display = $("display");
  const expression = $("expression");
  const errorBox = $("error");
  const historyList = $("history");
  const historyEmpty = $("history-empty");

  const state = {
    entry: "0",      // what the display shows
    a: null,         // first operand, once an operator is chosen
    op: null,        // pending operator: + - * /
    fresh: true,     // the next digit starts a new entry instead of appending
    typed: false,    // the entry is a second operand the user gave
    note: "",        // expression line shown when no operator is pending
  };

  const fmt = (n) => String(n);

  function render() {
    display.textContent = state.entry;
    expression.textContent =
      state.a !== null && state.op ? `${fmt(state.a)} ${SYMBOLS[state.op]}` : state.note;
    document.querySelectorAll(".key.op").forEach((el) => {
      el.classList.toggle("active", el.dataset.key === state.op && !state.typed);
    });
  }

  function reset() {
    Object.assign(state, { entry: "0", a: null, op: null, fresh: true, typed: false, note: "" });
  }

  function showError(message) {
    reset();
    state.entry = "Error";
    errorBox.textContent = message;
  }

  function detailOf(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    // FastAPI's own validation errors are a list of {loc, msg}.
    if (Array.isArray(detail)) return detail.map((d) => d.msg || String(d)).join("; ");
    return `request failed (HTTP ${status})`;
  }

  async function compute(a, op, b) {
    let res, body;
    try {
      res = await fetch("api/calculate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ a, op, b }),
      });
      body = await res.json().catch(() => null);
    } catch (err) {
      showError("cannot reach the server");
      return null;
    }
    if (!res.ok) {
      showError(detailOf(body, res.status));
      return null;
    }
    await loadHistory();
    return body;
  }

  function digit(d) {
    if (state.fresh || state.entry === "0") {
      state.entry = d;
    } else if (state.entry.replace(/[^0-9]/g, "").length < MAX_DIGITS) {
      state.entry += d;
    }
    state.fresh = false;
    state.typed = true;
  }

  function point() {
    if (state.fresh) {
      state.entry = "0.";
    } else if (!state.entry.includes(".")) {
      state.entry += ".";
    }
    state.fresh = false;
    state.typed = true;
  }

  function backspace() {
    if (state.fresh) return;
    state.entry = state.entry.slice(0, -1);
    if (state.entry === "" || state.entry === "-") state.entry = "0";
  }

  async function operator(op) {
    if (state.a !== null && state.op && state.typed) {
      // Chained input (2 + 3 × …): settle the pending operation first.
      const done = await compute(state.a, state.op, Number(state.entry));
      if (!done) return;
      state.entry = fmt(done.result);
    }
    state.a = Number(state.entry);
    state.op = op;
    state.fresh = true;
    state.typed = false;
  }

  async function equals() {
    if (state.a === null || !state.op) return;
    const a = state.a, op = state.op, b = Number(state.entry);
    const done = await compute(a, op, b);
    if (!done) return;
    reset();
    state.entry = fmt(done.result);
    state.note = `${fmt(done.a)} ${SYMBOLS[done.op]} ${fmt(done.b)} =`;
  }

  async function handle(key) {
    if (state.entry === "Error" && key !== "C") reset();
    errorBox.textContent = "";
    if (/^[0-9]$/.test(key)) digit(key);
    else if (key === ".") point();
    else if (key in SYMBOLS) await operator(key);
    else if (key === "=") await equals();
    else if (key === "C") reset();
    else if (key === "Backspace") backspace();
    render();
  }

  // Presses are handled strictly in order, even while a request is in flight.
  let queue = Promise.resolve();
  function press(key) {
    queue = queue.then(() => handle(key)).catch((err) => console.error(err));
    return queue;
  }

  function entryText(item) {
    return `${fmt(item.a)} ${SYMBOLS[item.op] || item.op} ${fmt(item.b)} = ${fmt(item.result)}`;
  }

  async function loadHistory() {
    let items = [];
    try {
      const res = await fetch("api/history");
      if (res.ok) items = (await res.json()).items || [];
    } catch (err) {
      console.error(err);
    }
    historyList.replaceChildren(
      ...items.map((item) => {
        const li = document.createElement("li");
        li.textContent = entryText(item);
        li.title = `${item.created_at} — click to use ${fmt(item.result)}`;
        li.dataset.result = fmt(item.result);
        return li;
      })
    );
    historyEmpty.hidden = items.length > 0;
  }

  async function clearHistory() {
    try {
      await fetch("api/history", { method: "DELETE" });
    } catch (err) {
      console.error(err);
    }
    await loadHistory();
  }

  function flash(key) {
    const el = document.querySelector(`.key[data-key="${CSS.escape(key)}"]`);
    if (!el) return;
    el.classList.add("pressed");
    setTimeout(() => el.classList.remove("pressed"), 100);
  }

  document.querySelectorAll(".key[data-key]").forEach((el) => {
    el.addEventListener("click", () => press(el.dataset.key));
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = /^[0-9.+\-*/]$/.test(event.key) ? event.key : KEYBOARD[event.key];
    if (!key) return;
    // Stops Enter from also clicking a focused button, and / from opening quick find.
    event.preventDefault();
    flash(key);
    press(key);
  });

  historyList.addEventListener("click", (event) => {
    const li = event.target.closest("li");
    if (!li) return;
    queue = queue.then(() => {
      if (state.entry === "Error") reset();
      state.entry = li.dataset.result;
      state.fresh = true;
      state.typed = true;
      render();
    });
  });

  $("clear-history").addEventListener("click", () => {
    queue = queue.then(clearHistory);
  });

  render();
  loadHistory();
})();
