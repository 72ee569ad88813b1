// The operator console: a single page over the /v1 JSON routes. No framework, no build step.
// Text from the server is always inserted as text (never as HTML).
"use strict";

(function () {
  const LANG_KEY = "fapiao-console-lang";
  const REFRESH_MS = 15000;
  const REPLAYABLE = ["failed", "rejected"];
  const WITHDRAWABLE = ["draft", "pushed", "invoice_failed", "failed"];
  const STATE_ORDER = window.STATES.map((row) => row[0]);
  const STATE_INFO = Object.fromEntries(
    window.STATES.map(([key, zh, en, meaningZh, meaningEn]) => [
      key, { zh, en, meaningZh, meaningEn },
    ]),
  );

  const app = {
    session: null,
    lang: readLang(),
    timer: null,
  };

  // ------------------------------------------------------------------ language

  function readLang() {
    let lang = null;
    try { lang = window.localStorage.getItem(LANG_KEY); } catch (e) { lang = null; }
    if (!lang) {
      const match = document.cookie.match(/(?:^|;\s*)fapiao_console_lang=(zh|en)/);
      lang = match ? match[1] : null;
    }
    return lang === "en" ? "en" : "zh";
  }

  function setLang(lang) {
    app.lang = lang;
    try { window.localStorage.setItem(LANG_KEY, lang); } catch (e) { /* private mode */ }
    document.cookie = `fapiao_console_lang=${lang}; path=/console; max-age=31536000; samesite=strict`;
    applyStaticTexts();
    route();
  }

  function t(key, vars) {
    const table = window.I18N[app.lang] || window.I18N.zh;
    let text = table[key] !== undefined ? table[key] : key;
    for (const [name, value] of Object.entries(vars || {})) {
      text = text.split(`{${name}}`).join(String(value));
    }
    return text;
  }

  function stateName(status) {
    const info = STATE_INFO[status];
    if (!info) return status;
    return app.lang === "en" ? info.en : `${info.zh}`;
  }

  function stateMeaning(status) {
    const info = STATE_INFO[status];
    if (!info) return "";
    return app.lang === "en" ? info.meaningEn : info.meaningZh;
  }

  function applyStaticTexts() {
    document.documentElement.lang = app.lang === "en" ? "en" : "zh-CN";
    document.title = t("brand");
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    document.getElementById("lang-toggle").textContent = t("lang.switch");
    renderWho();
  }

  // ------------------------------------------------------------------ small helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.floor(Number(seconds));
    if (s < 60) return t("age.s", { n: s });
    if (s < 3600) return t("age.m", { n: Math.floor(s / 60) });
    if (s < 86400) {
      const hours = Math.floor(s / 3600);
      const minutes = Math.floor((s % 3600) / 60);
      return t("age.h", { n: hours }) + (minutes ? " " + t("age.m", { n: minutes }) : "");
    }
    const days = Math.floor(s / 86400);
    const hours = Math.floor((s % 86400) / 3600);
    return t("age.d", { n: days }) + (hours ? " " + t("age.h", { n: hours }) : "");
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  // Secrets never belong in the ledger; this is a second line for anything that slipped in.
  function masked(text) {
    if (text === null || text === undefined) return "";
    return String(text)
      .replace(/((?:access_?token|app_?secret|appSecret|password|secret|sign|token)["']?\s*[:=]\s*["']?)[^"'&\s,}]+/gi, "$1***")
      .replace(/\b[A-Za-z0-9+/_-]{32,}={0,2}\b/g, (m) => m.slice(0, 4) + "***");
  }

  function badge(status) {
    return h("span", { class: `badge st-${status}`, dataset: { status }, title: status },
      stateName(status));
  }

  function billLink(bill, tenant, seller) {
    const query = new URLSearchParams();
    if (tenant) query.set("tenant", tenant);
    if (seller) query.set("seller_tax_id", seller);
    const suffix = query.toString() ? `?${query}` : "";
    return h("a", { href: `#/documents/${encodeURIComponent(bill)}${suffix}`, class: "bill" }, bill);
  }

  function flash(message, kind) {
    const node = document.getElementById("flash");
    node.textContent = message;
    node.className = `flash ${kind || "ok"}`;
    node.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { node.hidden = true; }, 8000);
  }

  function canAct() {
    return Boolean(app.session && app.session.role === "operator");
  }

  // `rows`: an array of <tr>, or a <tbody> that is filled later (paged lists).
  function table(headers, rows, attrs) {
    const body = rows instanceof Element && rows.tagName === "TBODY" ? rows : h("tbody", {}, rows);
    return h("table", attrs || { class: "grid" },
      h("thead", {}, h("tr", {}, headers.map((head) => h("th", {}, head)))), body);
  }

  // ------------------------------------------------------------------ HTTP

  class ApiFailure extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.body = body;
      this.code = error.code;
      this.messageZh = error.message_zh;
    }

    text() {
      return app.lang === "zh" && this.messageZh ? this.messageZh : this.message;
    }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && app.session && app.session.csrf_token) {
      headers["X-CSRF-Token"] = app.session.csrf_token;
    }
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401 && !path.startsWith("/console/")) {
      app.session = null;
      showLogin();
      throw new ApiFailure(401, data);
    }
    if (!response.ok) throw new ApiFailure(response.status, data);
    return data;
  }

  function failure(node, error) {
    const text = error instanceof ApiFailure ? error.text() : String(error);
    clear(node).append(h("p", { class: "error" }, t("common.error", { message: text })));
  }

  // ------------------------------------------------------------------ session

  function renderWho() {
    const who = document.getElementById("who");
    const nav = document.getElementById("nav");
    const logout = document.getElementById("logout");
    clear(who);
    if (!app.session) {
      nav.hidden = true;
      logout.hidden = true;
      return;
    }
    nav.hidden = false;
    logout.hidden = !app.session.csrf_token;
    who.append(h("span", { class: "name" }, app.session.name), " ",
      h("span", { class: `role role-${app.session.role}` }, t(`role.${app.session.role}`)));
  }

  async function loadSession() {
    try {
      app.session = await api("GET", "/console/session");
    } catch (error) {
      app.session = null;
    }
    renderWho();
    return app.session;
  }

  function showLogin(message) {
    stopTimer();
    renderWho();
    const main = clear(document.getElementById("main"));
    const error = h("p", { class: "error", id: "login-error", hidden: !message }, message || "");
    const name = h("input", { id: "login-name", name: "name", autocomplete: "username", required: true });
    const password = h("input", {
      id: "login-password", name: "password", type: "password",
      autocomplete: "current-password", required: true,
    });
    const form = h("form", { class: "login card", id: "login-form" },
      h("h1", {}, t("login.title")),
      h("label", {}, h("span", {}, t("login.name")), name),
      h("label", {}, h("span", {}, t("login.password")), password),
      error,
      h("button", { type: "submit", id: "login-submit" }, t("login.submit")),
      h("p", { class: "muted" }, t("login.hint")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      try {
        app.session = await api("POST", "/console/login",
          { name: name.value, password: password.value });
        password.value = "";
        renderWho();
        route();
      } catch (failureError) {
        password.value = "";
        error.textContent = failureError.status === 401 ? t("login.failed") :
          (failureError.text ? failureError.text() : String(failureError));
        error.hidden = false;
      }
    });
    main.append(form);
    name.focus();
  }

  async function logout() {
    try { await api("POST", "/console/logout"); } catch (e) { /* the cookie is gone anyway */ }
    app.session = null;
    location.hash = "#/overview";
    showLogin();
  }

  // ------------------------------------------------------------------ confirmation dialog

  // One dialog for every action: a title, what will happen, a required reason, the actor.
  // `preview` (optional) runs first and must succeed before the confirm button works.
  function confirmAction({ title, body, preview, run, done }) {
    const dialog = document.getElementById("dialog");
    const reason = document.getElementById("dialog-reason");
    const errorNode = document.getElementById("dialog-error");
    const result = clear(document.getElementById("dialog-result"));
    const previewButton = document.getElementById("dialog-preview");
    const confirmButton = document.getElementById("dialog-confirm");
    const cancelButton = document.getElementById("dialog-cancel");
    document.getElementById("dialog-title").textContent = title;
    clear(document.getElementById("dialog-body")).append(h("p", {}, body));
    document.getElementById("dialog-actor").textContent =
      t("dialog.actor", { actor: app.session ? app.session.actor : "?" });
    reason.value = "";
    errorNode.hidden = true;
    previewButton.hidden = !preview;
    previewButton.disabled = false;
    confirmButton.hidden = false;
    confirmButton.disabled = Boolean(preview);
    confirmButton.textContent = t("dialog.confirm");
    cancelButton.textContent = t("dialog.cancel");
    let previewedWith = null;

    function showError(error) {
      errorNode.textContent = error instanceof ApiFailure ? error.text() : String(error);
      errorNode.hidden = false;
    }

    function wanted() {
      const text = reason.value.trim();
      if (!text) {
        showError(t("dialog.reason_required"));
        reason.focus();
        return null;
      }
      errorNode.hidden = true;
      return text;
    }

    reason.oninput = () => {
      if (preview && previewedWith !== null && reason.value.trim() !== previewedWith) {
        confirmButton.disabled = true;
      }
    };
    previewButton.onclick = async () => {
      const text = wanted();
      if (text === null) return;
      previewButton.disabled = true;
      try {
        clear(result).append(await preview(text));
        previewedWith = text;
        confirmButton.disabled = false;
      } catch (error) {
        showError(error);
      } finally {
        previewButton.disabled = false;
      }
    };
    confirmButton.onclick = async () => {
      const text = wanted();
      if (text === null) return;
      if (preview && previewedWith === null) {
        showError(t("dialog.bulk_need_preview"));
        return;
      }
      confirmButton.disabled = true;
      previewButton.disabled = true;
      try {
        const answer = await run(text);
        const shown = done ? done(answer) : null;
        if (shown) {
          clear(result).append(shown);
          confirmButton.hidden = true;
          previewButton.hidden = true;
          cancelButton.textContent = t("dialog.close");
        } else {
          dialog.close();
        }
        route(true);
      } catch (error) {
        confirmButton.disabled = false;
        showError(error);
      }
    };
    cancelButton.onclick = () => dialog.close();
    dialog.showModal();
    reason.focus();
  }

  // ------------------------------------------------------------------ overview

  async function renderOverview(main) {
    const body = h("div", {}, h("p", { class: "muted" }, t("common.loading")));
    main.append(h("div", { class: "page-head" }, h("h1", {}, t("overview.title")),
      refreshControls(() => renderOverviewBody(body))), body);
    await renderOverviewBody(body);
  }

  async function renderOverviewBody(body) {
    let data;
    try {
      data = await api("GET", "/v1/overview");
    } catch (error) {
      failure(body, error);
      return;
    }
    const attention = data.attention || {};
    const paused = attention.paused_tenants || [];
    const card = (key, value, href, level) => h("a", {
      class: `card stat ${value ? level : "calm"}`, href, dataset: { attention: key },
    }, h("span", { class: "value" }, Array.isArray(value) ? value.length : value || 0),
    h("span", { class: "label" }, t(`overview.${key}`)),
    Array.isArray(value) && value.length ? h("span", { class: "detail" }, value.join("、")) : null);
    const cards = h("div", { class: "cards" },
      card("stuck", attention.stuck, "#/documents", "alarm"),
      card("failed", attention.failed, "#/documents?status=failed", "alarm"),
      card("rejected", attention.rejected, "#/documents?status=rejected", "alarm"),
      card("invoice_failed", attention.invoice_failed, "#/documents?status=invoice_failed", "alarm"),
      card("paused", paused, "#/tenants", "warn"),
      card("parked", attention.parked_notifications, "#/notifications", "warn"));

    const states = data.states || [];
    const tenants = [...new Set(states.map((row) => row.tenant))].sort();
    const byKey = new Map(states.map((row) => [`${row.status}\u0000${row.tenant}`, row]));
    const present = STATE_ORDER.filter((status) => states.some((row) => row.status === status && row.count));
    const extra = [...new Set(states.map((row) => row.status))].filter((s) => !STATE_ORDER.includes(s));
    const rows = present.concat(extra).map((status) => h("tr", { dataset: { status } },
      h("th", { scope: "row" }, badge(status)),
      tenants.map((tenant) => {
        const row = byKey.get(`${status}\u0000${tenant}`);
        if (!row || !row.count) return h("td", { class: "num muted" }, "·");
        const query = new URLSearchParams({ status, tenant });
        return h("td", { class: "num" },
          h("a", { href: `#/documents?${query}` }, h("strong", {}, row.count)),
          h("span", { class: "age" }, age(row.oldest_age_seconds)));
      })));
    clear(body).append(
      h("h2", {}, t("overview.attention")), cards,
      h("h2", {}, t("overview.states")),
      rows.length ? table([t("overview.state"), ...tenants], rows, { class: "grid matrix", id: "overview-states" })
        : h("p", { class: "muted" }, t("overview.nostates")),
      h("p", { class: "muted small" }, t("common.updated", { time: when(new Date().toISOString()) })));
  }

  // ------------------------------------------------------------------ refresh controls

  function stopTimer() {
    if (app.timer) clearInterval(app.timer);
    app.timer = null;
  }

  function refreshControls(reload) {
    const auto = h("input", { type: "checkbox", id: "auto-refresh" });
    auto.addEventListener("change", () => {
      stopTimer();
      if (auto.checked) app.timer = setInterval(reload, REFRESH_MS);
    });
    return h("div", { class: "tools" },
      h("button", { type: "button", class: "ghost", id: "refresh", onclick: reload }, t("common.refresh")),
      h("label", { class: "inline" }, auto, t("common.autorefresh")));
  }

  // ------------------------------------------------------------------ document list

  function filterFrom(params) {
    return {
      status: params.getAll("status"),
      tenant: params.get("tenant") || "",
      seller: params.get("seller") || "",
      older_than: params.get("older_than") || "",
      updated_since: params.get("updated_since") || "",
      q: params.get("q") || "",
    };
  }

  function filterQuery(filter) {
    const query = new URLSearchParams();
    for (const status of filter.status) query.append("status", status);
    for (const key of ["tenant", "seller", "older_than", "updated_since", "q"]) {
      if (filter[key]) query.set(key, filter[key]);
    }
    return query;
  }

  // The bulk operations take the list's filters as a JSON object (only those that are set).
  function filterBody(filter) {
    const body = {};
    if (filter.status.length) body.status = filter.status;
    for (const key of ["tenant", "seller", "older_than", "updated_since", "q"]) {
      if (filter[key]) body[key] = filter[key];
    }
    return body;
  }

  async function renderDocuments(main, params) {
    const filter = filterFrom(params);
    const statusBoxes = STATE_ORDER.map((status) => h("label", { class: "chip" },
      h("input", { type: "checkbox", name: "status", value: status, checked: filter.status.includes(status) }),
      stateName(status)));
    const field = (key, label, placeholder) => h("label", {},
      h("span", {}, label),
      h("input", { name: key, id: `filter-${key}`, value: filter[key], placeholder: placeholder || "" }));
    const form = h("form", { class: "filters card", id: "filters" },
      h("fieldset", { class: "states" }, h("legend", {}, t("docs.status")), statusBoxes),
      h("div", { class: "fields" },
        field("q", t("docs.q")),
        field("tenant", t("docs.tenant")),
        field("seller", t("docs.seller")),
        field("older_than", t("docs.older_than"), t("docs.placeholder.older")),
        field("updated_since", t("docs.updated_since"), t("docs.placeholder.since"))),
      h("div", { class: "buttons" },
        h("button", { type: "submit", id: "filter-submit" }, t("common.search")),
        h("button", { type: "button", class: "ghost", onclick: () => { location.hash = "#/documents"; } },
          t("common.reset"))));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const next = {
        status: data.getAll("status"),
        tenant: String(data.get("tenant") || "").trim(),
        seller: String(data.get("seller") || "").trim(),
        older_than: String(data.get("older_than") || "").trim(),
        updated_since: String(data.get("updated_since") || "").trim(),
        q: String(data.get("q") || "").trim(),
      };
      const target = `#/documents?${filterQuery(next)}`;
      if (location.hash === target) route(true); else location.hash = target;
    });

    const results = h("div", { id: "results" });
    const reload = () => loadDocuments(results, filter);
    const bulk = canAct() ? h("button", {
      type: "button", id: "bulk-replay", class: "danger",
      onclick: () => bulkReplay(filter),
    }, t("docs.bulk_replay")) : null;
    main.append(h("div", { class: "page-head" }, h("h1", {}, t("docs.title")),
      refreshControls(reload), bulk), form, results);
    await reload();
  }

  async function loadDocuments(results, filter) {
    const rows = h("tbody", { id: "documents-body" });
    const count = h("p", { class: "muted small", id: "documents-count" });
    const more = h("button", { type: "button", class: "ghost", id: "load-more", hidden: true }, t("common.more"));
    let shown = 0;
    async function page(cursor) {
      const query = filterQuery(filter);
      query.set("limit", "50");
      if (cursor) query.set("cursor", cursor);
      const data = await api("GET", `/v1/documents?${query}`);
      for (const item of data.items || []) {
        rows.append(h("tr", { dataset: { bill: item.bill_no, status: item.status } },
          h("td", {}, billLink(item.bill_no, item.tenant, item.seller_tax_id)),
          h("td", {}, item.tenant),
          h("td", { class: "mono" }, item.seller_tax_id),
          h("td", { class: "buyer" }, item.buyer_name || ""),
          h("td", {}, badge(item.status)),
          h("td", { class: "num" }, age(item.age_seconds)),
          h("td", { class: "reason" }, masked(item.reason || "")),
          h("td", { class: "mono" }, item.last_error_code || ""),
          h("td", { class: "num mono" }, item.total_incl_tax || ""),
          h("td", { class: "small" }, when(item.updated_at))));
      }
      shown += (data.items || []).length;
      count.textContent = t("docs.count", { n: shown });
      more.hidden = !data.next_cursor;
      more.onclick = () => page(data.next_cursor).catch((error) => failure(results, error));
    }
    try {
      await page(null);
    } catch (error) {
      failure(results, error);
      return;
    }
    clear(results).append(
      shown ? table([t("docs.bill_no"), t("docs.tenant"), t("docs.seller"), t("docs.buyer"),
        t("docs.status"), t("docs.age"), t("docs.reason"), t("docs.code"), t("docs.total"),
        t("docs.updated")], rows, { class: "grid", id: "documents" })
        : h("p", { class: "muted", id: "documents-empty" }, t("common.empty")),
      count, more);
  }

  function operationTable(answer, id) {
    const rows = (answer.documents || []).map((doc) => h("tr", { dataset: { bill: doc.bill_no } },
      h("td", {}, doc.bill_no), h("td", {}, doc.tenant), h("td", {}, badge(doc.status)),
      h("td", { class: "outcome" }, doc.outcome)));
    const heading = answer.dry_run ? t("dialog.bulk_preview", { n: answer.count })
      : t("dialog.bulk_done", { n: answer.count });
    return h("div", { id, class: "operation" }, h("p", { class: "strong" }, heading),
      rows.length ? table([t("docs.bill_no"), t("docs.tenant"), t("docs.status"), t("col.outcome")], rows)
        : null);
  }

  function bulkReplay(filter) {
    const body = (reason, dryRun) => ({
      filter: filterBody(filter), dry_run: dryRun, reason, limit: null,
    });
    confirmAction({
      title: t("dialog.bulk"),
      body: t("dialog.bulk_body"),
      preview: async (reason) => operationTable(
        await api("POST", "/v1/operations/replay", body(reason, true)), "bulk-preview"),
      run: (reason) => api("POST", "/v1/operations/replay", body(reason, false)),
      done: (answer) => operationTable(answer, "bulk-result"),
    });
  }

  // ------------------------------------------------------------------ one document

  async function renderDocument(main, bill, params) {
    const query = new URLSearchParams();
    for (const key of ["tenant", "seller_tax_id"]) if (params.get(key)) query.set(key, params.get(key));
    const suffix = query.toString() ? `?${query}` : "";
    main.append(h("p", {}, h("a", { href: "#/documents" }, t("doc.back"))));
    let view;
    try {
      view = await api("GET", `/v1/documents/${encodeURIComponent(bill)}${suffix}`);
    } catch (error) {
      if (error instanceof ApiFailure && error.code === "ambiguous_bill_no") {
        main.append(h("p", {}, t("doc.ambiguous")), h("ul", {},
          (error.body.candidates || []).map((c) => h("li", {},
            billLink(bill, c.tenant, c.seller_tax_id), ` ${c.tenant} / ${c.seller_tax_id} `, badge(c.status)))));
        return;
      }
      if (error instanceof ApiFailure && error.status === 404) {
        main.append(h("p", { class: "error" }, t("doc.not_found", { bill })));
        return;
      }
      const box = h("div");
      main.append(box);
      failure(box, error);
      return;
    }
    const actions = h("div", { class: "actions" });
    if (canAct()) {
      const replayable = REPLAYABLE.includes(view.status);
      actions.append(
        h("button", {
          type: "button", id: "action-replay", disabled: !replayable,
          title: replayable ? null : t("doc.replay_only"),
          onclick: () => singleAction("replay", view, suffix),
        }, t("doc.replay")),
        h("button", {
          type: "button", id: "action-withdraw", class: "danger",
          disabled: !WITHDRAWABLE.includes(view.status),
          onclick: () => singleAction("withdraw", view, suffix),
        }, t("doc.withdraw")));
    } else {
      actions.append(h("span", { class: "muted" }, t("common.readonly")));
    }
    const flowerBase = (app.session && app.session.flower_url) || "";
    if (flowerBase) {
      const search = new URLSearchParams({ search: view.bill_no, limit: "100" });
      actions.append(
        h("a", { class: "button ghost", id: "flower-link", target: "_blank", rel: "noopener noreferrer",
          href: `${flowerBase}/api/tasks?${search}` }, t("doc.flower")),
        h("a", { class: "button ghost", target: "_blank", rel: "noopener noreferrer",
          href: `${flowerBase}/tasks` }, t("doc.flower_page")));
    }

    const facts = h("dl", { class: "facts" },
      h("dt", {}, t("doc.state")), h("dd", { id: "doc-status" }, badge(view.status)),
      h("dt", {}, t("doc.meaning")), h("dd", { id: "doc-meaning" }, stateMeaning(view.status)),
      h("dt", {}, t("doc.reason")), h("dd", { id: "doc-reason", class: "reason" }, masked(view.reason) || "—"),
      h("dt", {}, t("doc.error_code")), h("dd", { class: "mono" }, view.last_error_code || "—"),
      h("dt", {}, t("doc.age")), h("dd", {}, age(view.age_seconds)),
      h("dt", {}, t("docs.tenant")), h("dd", {}, view.tenant),
      h("dt", {}, t("docs.seller")), h("dd", { class: "mono" }, view.seller_tax_id),
      h("dt", {}, t("doc.amounts")),
      h("dd", { class: "mono" }, `${view.total_amount || "—"} / ${view.total_incl_tax || "—"} / ${view.issued_amount || "—"}`),
      h("dt", {}, t("doc.attempt")), h("dd", {}, view.push_attempt ?? "—"),
      h("dt", {}, t("docs.revision")), h("dd", {}, view.revision));
    // Red-letter (红冲) links: the original of a red document, the red documents of an original.
    if (view.original) {
      facts.append(h("dt", {}, t("doc.original")), h("dd", { id: "doc-original" },
        billLink(view.original.bill_no, view.tenant, view.seller_tax_id), " ", badge(view.original.status)));
    }
    if ((view.red_documents || []).length) {
      facts.append(h("dt", {}, t("doc.red_documents")), h("dd", { id: "doc-red-documents" },
        ...view.red_documents.map((red) => h("span", { class: "red-doc" },
          billLink(red.bill_no, view.tenant, view.seller_tax_id), " ", badge(red.status),
          h("span", { class: "mono" }, ` ${red.total_amount || ""} `)))));
    }

    const timeline = (view.timeline || []).map((entry) => h("tr", { class: `k-${entry.kind}` },
      h("td", { class: "small" }, when(entry.at)),
      h("td", {}, t(`kind.${entry.kind}`)),
      h("td", {}, timelineDetail(entry)),
      h("td", { class: "small" }, entry.actor || "")));
    const calls = (view.timeline || []).filter((entry) => entry.kind === "cloud_call").map((call) =>
      h("tr", {},
        h("td", { class: "small" }, when(call.at)),
        h("td", { class: "mono" }, call.interface),
        h("td", {}, call.outcome || ""),
        h("td", { class: "num" }, call.http_status ?? ""),
        h("td", { class: "mono" }, call.error_code ?? ""),
        h("td", { class: "reason" }, masked(call.message)),
        h("td", { class: "num" }, call.attempt ?? ""),
        h("td", { class: "num" }, call.latency_ms === null || call.latency_ms === undefined ? "" : `${call.latency_ms} ms`),
        h("td", { class: "mono small" }, masked(call.request_id || ""))));
    const invoices = (view.invoices || []).map((inv) => h("tr", {},
      h("td", { class: "mono" }, inv.invoice_num || ""),
      h("td", { class: "mono" }, inv.invoice_code || ""),
      h("td", {}, inv.invoice_type || ""),
      h("td", {}, inv.issue_error_message ? `${inv.invoice_status || ""} ${inv.issue_error_message}` : inv.invoice_status || ""),
      h("td", {}, standingText(inv)),
      h("td", {}, inv.invoice_date || ""),
      h("td", { class: "num mono" }, inv.include_tax_amount || inv.total_amount || ""),
      h("td", {}, Object.entries(inv.files || {}).map(([kind, url]) => h("a", {
        href: safeUrl(url), target: "_blank", rel: "noopener noreferrer", class: "file",
      }, kind.replace(/^invoice|Url$/g, "") || kind)))));

    const notificationsBox = h("div", { id: "doc-notifications" }, h("p", { class: "muted" }, t("common.loading")));
    main.append(
      h("div", { class: "page-head" }, h("h1", {}, t("doc.title", { bill: view.bill_no })), actions),
      h("section", { class: "card" }, facts),
      h("h2", {}, t("doc.timeline")),
      timeline.length ? table([t("col.time"), t("col.kind"), t("col.detail"), t("col.actor")], timeline,
        { class: "grid", id: "timeline" }) : h("p", { class: "muted" }, t("common.none")),
      h("h2", {}, t("doc.calls")),
      calls.length ? table([t("col.time"), t("col.interface"), t("col.outcome"), t("col.http"),
        t("col.code"), t("col.message"), t("col.attempt"), t("col.latency"), t("col.request")], calls,
      { class: "grid", id: "cloud-calls" }) : h("p", { class: "muted" }, t("common.none")),
      h("h2", {}, t("doc.invoices")),
      invoices.length ? table([t("col.invoice_num"), t("col.invoice_code"), t("col.invoice_type"),
        t("col.invoice_status"), t("col.standing"), t("col.invoice_date"), t("col.amount"), t("doc.files")], invoices,
      { class: "grid", id: "invoices" }) : h("p", { class: "muted" }, t("common.none")),
      h("h2", {}, t("doc.notifications")), notificationsBox);
    await renderDocumentNotifications(notificationsBox, view);
  }

  // After issuance: voided / (partly) reversed, with what is left to reverse.
  function standingText(inv) {
    if (inv.original_invoice_num) return t("standing.red_of", { num: inv.original_invoice_num });
    if (!inv.standing || inv.standing === "normal") return "";
    const left = inv.standing === "partially_reversed" && inv.can_red_amount ? ` (${inv.can_red_amount})` : "";
    return t("standing." + inv.standing) + left;
  }

  function safeUrl(url) {
    return /^https?:\/\//i.test(String(url)) ? url : "#";
  }

  function timelineDetail(entry) {
    switch (entry.kind) {
      case "transition": {
        const parts = [h("span", { class: "mono" }, entry.event), " "];
        if (entry.from) parts.push(badge(entry.from), " → ");
        if (entry.to) parts.push(badge(entry.to));
        if (entry.outcome && entry.outcome !== "applied") parts.push(` (${entry.outcome})`);
        if (entry.reason) parts.push(h("div", { class: "reason" }, masked(entry.reason)));
        return parts;
      }
      case "cloud_call":
        return [h("span", { class: "mono" }, entry.interface), ` ${entry.outcome || ""} `,
          entry.error_code ? h("span", { class: "mono" }, `errorCode ${entry.error_code} `) : null,
          entry.message ? h("div", { class: "reason" }, masked(entry.message)) : null];
      case "callback":
        return `${entry.style || ""} ${entry.state || ""} ${entry.error ? masked(entry.error) : ""}`;
      case "invoice":
        return `${entry.invoice_num || ""} ${entry.invoice_status || ""} ${entry.issue_error_message || ""}`;
      case "invoice_standing":
        return `${entry.invoice_num || ""} ${t("standing." + entry.standing)}`;
      default:
        return JSON.stringify(entry);
    }
  }

  async function renderDocumentNotifications(box, view) {
    let items = Array.isArray(view.notifications) ? view.notifications : null;
    if (items === null) {
      try {
        const query = new URLSearchParams({ state: "all", limit: "500" });
        const data = await api("GET", `/v1/notifications?${query}`);
        items = (data.items || data.notifications || data || []).filter(
          (item) => !item.bill_no || item.bill_no === view.bill_no);
      } catch (error) {
        clear(box).append(h("p", { class: "muted" }, t("common.none")));
        return;
      }
    }
    clear(box).append(items.length ? notificationTable(items, false) : h("p", { class: "muted" }, t("common.none")));
  }

  function singleAction(kind, view, suffix) {
    confirmAction({
      title: t(`dialog.${kind}`, { bill: view.bill_no }),
      body: t(`dialog.${kind}_body`),
      run: (reason) => api("POST", `/v1/documents/${encodeURIComponent(view.bill_no)}/${kind}${suffix}`, { reason }),
      done: (answer) => {
        flash(t(`done.${kind}`, { bill: answer.bill_no, status: stateName(answer.status) }));
        return null;
      },
    });
  }

  // ------------------------------------------------------------------ notifications

  function notificationTable(items, selectable) {
    const rows = items.map((item) => h("tr", { dataset: { id: item.id } },
      selectable ? h("td", {}, h("input", { type: "checkbox", class: "pick", value: item.id })) : null,
      h("td", {}, item.bill_no ? billLink(item.bill_no, item.tenant) : ""),
      h("td", { class: "mono" }, item.event || item.kind || ""),
      h("td", {}, item.state || ""),
      h("td", { class: "num" }, item.attempts ?? ""),
      h("td", { class: "reason" }, masked(item.last_error || "")),
      h("td", { class: "small" }, when(item.created_at)),
      h("td", { class: "small" }, when(item.updated_at))));
    const headers = [t("docs.bill_no"), t("col.event"), t("col.state"), t("col.attempts"),
      t("col.last_error"), t("col.created"), t("col.updated")];
    return table(selectable ? ["", ...headers] : headers, rows, { class: "grid", id: "notifications" });
  }

  async function renderNotifications(main) {
    const body = h("div");
    const reload = async () => {
      try {
        const data = await api("GET", "/v1/notifications?state=parked");
        const items = data.items || data.notifications || data || [];
        if (!items.length) {
          clear(body).append(h("p", { class: "muted" }, t("notif.none")));
          return;
        }
        const resend = canAct() ? h("button", {
          type: "button", id: "resend", onclick: () => {
            const ids = [...body.querySelectorAll("input.pick:checked")].map((box) => Number(box.value));
            if (!ids.length) return;
            confirmAction({
              title: t("dialog.resend"),
              body: t("dialog.resend_body", { n: ids.length }),
              run: (reason) => api("POST", "/v1/notifications/resend", { ids, reason }),
              done: () => { flash(t("done.resend", { n: ids.length })); return null; },
            });
          },
        }, t("notif.resend")) : null;
        clear(body).append(notificationTable(items, canAct()), resend);
      } catch (error) {
        failure(body, error);
      }
    };
    main.append(h("div", { class: "page-head" }, h("h1", {}, t("notif.title")), refreshControls(reload)), body);
    await reload();
  }

  // ------------------------------------------------------------------ tenants

  // Paused, or pushes held for credit quota: resume releases either.
  function waits(tenant) {
    return tenant.paused || Boolean(tenant.quota && tenant.quota.held);
  }

  // One line per seller: day / month surplus, a warning badge, the hold and until when.
  function quotaCell(quota) {
    if (!quota) return t("quota.unknown");
    return h("div", {}, ...quota.sellers.map((seller) => h("div", { title: seller.hold_reason || "" },
      `${seller.seller_tax_id}: ${seller.day_surplus ?? "?"} / ${seller.month_surplus ?? "?"} `,
      seller.is_warning ? h("span", { class: "badge st-in_doubt" }, t("quota.warning")) : "",
      seller.held ? h("span", { class: "badge st-failed" },
        t("quota.held", { until: new Date(seller.held_until).toLocaleString() })) : "")));
  }

  async function renderTenants(main) {
    const body = h("div");
    const reload = async () => {
      try {
        const data = await api("GET", "/v1/tenants");
        const items = Array.isArray(data) ? data : data.tenants || data.items || [];
        const rows = items.map((tenant) => h("tr", { dataset: { tenant: tenant.name } },
          h("td", {}, tenant.name),
          h("td", {}, tenant.paused ? h("span", { class: "badge st-failed" }, t("tenants.yes"))
            : h("span", { class: "badge st-invoiced" }, t("tenants.no"))),
          h("td", { class: "reason" }, tenant.paused_reason || ""),
          h("td", {}, tenant.token_health || ""),
          h("td", { class: "num" }, tenant.rate_limit_per_second ?? ""),
          h("td", { class: "quota" }, quotaCell(tenant.quota)),
          h("td", {}, canAct() ? h("button", {
            type: "button", class: waits(tenant) ? "" : "danger", dataset: { action: waits(tenant) ? "resume" : "pause" },
            onclick: () => {
              const kind = waits(tenant) ? "resume" : "pause";
              confirmAction({
                title: t(`dialog.${kind}`, { name: tenant.name }),
                body: t(`dialog.${kind}_body`),
                run: (reason) => api("POST", `/v1/tenants/${encodeURIComponent(tenant.name)}/${kind}`, { reason }),
                done: () => { flash(t(`done.${kind}`, { name: tenant.name })); return null; },
              });
            },
          }, t(waits(tenant) ? "tenants.resume" : "tenants.pause")) : "")));
        clear(body).append(table([t("col.name"), t("col.paused"), t("docs.reason"), t("col.token"),
          t("col.rate"), t("col.quota"), ""], rows, { class: "grid", id: "tenants" }));
      } catch (error) {
        failure(body, error);
      }
    };
    main.append(h("div", { class: "page-head" }, h("h1", {}, t("tenants.title")), refreshControls(reload)), body);
    await reload();
  }

  // ------------------------------------------------------------------ routing

  // keepDialog: an action's result stays on screen while the page behind it reloads.
  async function route(keepDialog) {
    stopTimer();
    const dialog = document.getElementById("dialog");
    if (keepDialog !== true && dialog.open) dialog.close();
    if (!app.session) {
      showLogin();
      return;
    }
    const hash = location.hash.replace(/^#/, "") || "/overview";
    const [path, search] = hash.split("?");
    const params = new URLSearchParams(search || "");
    const parts = path.split("/").filter(Boolean);
    const page = parts[0] || "overview";
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("active", link.dataset.page === page);
    }
    const main = clear(document.getElementById("main"));
    delete main.dataset.ready;
    main.dataset.page = parts.length > 1 ? "document" : page;
    if (page === "documents" && parts.length > 1) {
      await renderDocument(main, decodeURIComponent(parts.slice(1).join("/")), params);
    } else if (page === "documents") {
      await renderDocuments(main, params);
    } else if (page === "notifications") {
      await renderNotifications(main);
    } else if (page === "tenants") {
      await renderTenants(main);
    } else {
      await renderOverview(main);
    }
    main.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("lang-toggle").addEventListener("click",
      () => setLang(app.lang === "zh" ? "en" : "zh"));
    document.getElementById("logout").addEventListener("click", logout);
    window.addEventListener("hashchange", () => route());
    applyStaticTexts();
    await loadSession();
    route();
  });
})();
