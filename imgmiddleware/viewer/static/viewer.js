// The image style viewer. A plain client of the server's public OSS interface: ListBuckets,
// ListObjects, GET with x-oss-process, and the style API, signed (OSS V1) with the key the user types.
// Validation is the server's own answer; the builder's form comes from actions.json (the parser's tables).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { actions: [], byName: {}, selectedStep: -1, runId: 0, controller: null, urls: {} };

// --- requests ------------------------------------------------------------------------------------

/** Where the app is mounted, as this browser reaches it: "/", or "/media/" under a prefix (a WSGI
 * SCRIPT_NAME, or a proxy that strips one). The server writes in index.html the relative way up from
 * this page (one ../ per segment of its viewer_path); nothing here assumes the origin root. */
const MOUNT = (() => {
  const meta = document.querySelector('meta[name="imgmw-root"]');
  return new URL(meta ? meta.content : "/", location.href).pathname;
})();

/** Path-style URL path of an object under MOUNT ("" key: the bucket root; "" bucket: an app without
 * buckets, such as `serve --static`), each key segment percent-encoded. */
function objectPath(bucket, key) {
  const path = key.split("/").map(encodeURIComponent).join("/");
  return MOUNT + (bucket ? bucket + "/" + path : path);
}

/** A query string that keeps "/" and "," readable, as the OSS guides write process strings. */
function queryString(pairs) {
  return pairs.map(([k, v]) => encodeURIComponent(k) + (v === "" ? "" : "=" +
    encodeURIComponent(v).replace(/%2F/g, "/").replace(/%2C/g, ","))).join("&");
}

function credentials() {
  const id = $("access-key-id").value.trim();
  const secret = $("access-key-secret").value;
  return id && secret ? { id, secret } : null;
}

function base64(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text);
}

async function hmacSha1(secret, text) {
  if (!window.crypto || !crypto.subtle) {
    throw new Error("signing needs WebCrypto: open this page on 127.0.0.1 or localhost, or over HTTPS");
  }
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  return base64(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
}

// Query keys that are part of a V1 signature (OSS's sub-resources this page sends, and x-oss-*).
const SIGNED_QUERY = new Set(["style", "styleName", "x-oss-process"]);

/**
 * fetch() a request to bucket/key with query pairs; signed with an OSS V1 Authorization header when
 * credentials are typed (x-oss-date carries the date: browsers may not set Date).
 */
async function ossFetch(method, bucket, key, query, options = {}) {
  const path = objectPath(bucket, key);
  const url = path + (query.length ? "?" + queryString(query) : "");
  const headers = Object.assign({}, options.headers || {});
  const creds = credentials();
  if (creds) {
    const date = new Date().toUTCString();
    headers["x-oss-date"] = date;
    const signed = query.filter(([k]) => SIGNED_QUERY.has(k) || k.startsWith("x-oss-"))
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    // "/bucket/key", never the mount prefix: the server takes bucket and key from PATH_INFO, which
    // SCRIPT_NAME is not part of, and so do the SDKs, which sign the same way.
    let resource = bucket ? "/" + bucket + "/" + key : "/";
    if (signed.length) resource += "?" + signed.map(([k, v]) => (v ? k + "=" + v : k)).join("&");
    const ossHeaders = Object.keys(headers).map((h) => [h.toLowerCase(), String(headers[h]).trim()])
      .filter(([h]) => h.startsWith("x-oss-")).sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([h, v]) => h + ":" + v + "\n").join("");
    const contentType = headers["Content-Type"] || "";
    const toSign = [method, "", contentType, date, ossHeaders + resource].join("\n");
    headers["Authorization"] = "OSS " + creds.id + ":" + (await hmacSha1(creds.secret, toSign));
  }
  return fetch(url, { method, headers, body: options.body, signal: options.signal, cache: "no-store" });
}

/** {code, ec, message, status} of an OSS XML error answer (null when the body is not one). */
function parseError(status, text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const root = doc.documentElement;
  if (!root || root.nodeName !== "Error") return null;
  const field = (name) => (root.getElementsByTagName(name)[0] || {}).textContent || "";
  return { status, code: field("Code"), ec: field("EC"), message: field("Message") };
}

function describeError(err) {
  return err.code + (err.ec ? " (EC " + err.ec + ")" : "") + ": " + err.message;
}

function xmlEscape(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// --- buckets and objects ---------------------------------------------------------------------------

async function listBuckets() {
  if (!credentials()) return;                       // ListBuckets is never anonymous on OSS
  try {
    const response = await ossFetch("GET", "", "", []);
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "application/xml");
    const names = [...doc.querySelectorAll("Bucket > Name")].map((n) => n.textContent);
    $("bucket-list").replaceChildren(...names.map((n) => new Option(n, n)));
    if (!$("bucket").value && names.length) {
      $("bucket").value = names[0];
      await listKeys();
    }
  } catch (e) { /* a text field stays */ }
}

async function listKeys() {
  const bucket = $("bucket").value.trim();
  const status = $("list-status");
  status.className = "note";
  if (!bucket) { status.textContent = "Type a bucket name."; return; }
  status.textContent = "Listing " + bucket + " …";
  try {
    const response = await ossFetch("GET", bucket, "", [["max-keys", "1000"]]);
    const text = await response.text();
    if (!response.ok) {
      const err = parseError(response.status, text);
      status.textContent = "Cannot list " + bucket + ": " + (err ? describeError(err) : response.status) +
        ". Type a key instead.";
      status.className = "note bad";
      return;
    }
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const keys = [...doc.querySelectorAll("Contents > Key")].map((n) => n.textContent);
    const select = $("key-select");
    select.replaceChildren(new Option("(" + keys.length + " objects)", ""), ...keys.map((k) => new Option(k, k)));
    const truncated = (doc.querySelector("IsTruncated") || {}).textContent === "true";
    status.textContent = keys.length + " objects" + (truncated ? " (the first 1000)" : "") + " in " + bucket + ".";
    if (!$("key").value && keys.length) {
      const image = keys.find((k) => /\.(jpe?g|png|webp|gif|bmp|tiff?|avif|heic)$/i.test(k)) || keys[0];
      $("key").value = image;
      select.value = image;
      objectChanged();
    } else if (keys.includes($("key").value)) {
      select.value = $("key").value;
    }
  } catch (e) {
    status.textContent = "Cannot list " + bucket + ": " + e.message;
    status.className = "note bad";
  }
}

// --- original and result ---------------------------------------------------------------------------

function formatBytes(n) {
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB (" + n + " B)" : (n / 1048576).toFixed(2) + " MiB (" + n + " B)";
}

/** GET an object (processed when process is given) and show it in the panel `side`. */
async function show(side, process, signal) {
  const bucket = $("bucket").value.trim();
  const key = $("key").value.trim();
  const img = $(side + "-image");
  const query = process ? [["x-oss-process", process]] : [];
  const started = performance.now();
  const response = await ossFetch("GET", bucket, key, query, { signal });
  const firstByte = performance.now();
  const blob = await response.blob();
  const done = performance.now();
  if (signal && signal.aborted) return null;
  const type = response.headers.get("Content-Type") || "";
  $(side + "-type").textContent = type;
  $(side + "-bytes").textContent = formatBytes(blob.size);
  $(side + "-time").textContent = (done - started).toFixed(0) + " ms (first byte " + (firstByte - started).toFixed(0) + " ms)";
  if (side === "result") {
    const server = [response.headers.get("Server-Timing"), response.headers.get("x-imgmw-cache") &&
      "cache " + response.headers.get("x-imgmw-cache")].filter(Boolean).join("; ");
    $("result-server").textContent = server;
  }
  if (!response.ok) {
    const err = parseError(response.status, await blob.text()) ||
      { status: response.status, code: "HTTP " + response.status, ec: "", message: response.statusText };
    clearImage(side);
    return err;
  }
  if (type.startsWith("image/")) {
    const url = URL.createObjectURL(blob);
    if (state.urls[side]) URL.revokeObjectURL(state.urls[side]);
    state.urls[side] = url;
    if (side === "result") $("result-text").hidden = true;
    img.hidden = false;
    await new Promise((resolve) => {
      img.onload = img.onerror = resolve;
      img.src = url;
    });
    $(side + "-dims").textContent = img.naturalWidth ? img.naturalWidth + " × " + img.naturalHeight : "(the browser cannot show " + type + ")";
  } else {
    clearImage(side);
    if (side === "result") {
      const pre = $("result-text");
      pre.textContent = await blob.text();
      pre.hidden = false;
    }
  }
  return null;
}

function clearImage(side) {
  const img = $(side + "-image");
  img.removeAttribute("src");
  img.hidden = true;
  $(side + "-dims").textContent = "";
  if (side === "result") $("result-text").hidden = true;
}

function showVerdict(err) {
  $("verdict-ok").hidden = !!err;
  $("error").hidden = !err;
  $("process").classList.toggle("invalid", !!err);
  if (err) {
    $("error-code").textContent = err.code;
    $("error-ec").textContent = err.ec ? "EC " + err.ec : "";
    $("error-status").textContent = "(" + err.status + ")";
    $("error-message").textContent = err.message;
  }
}

async function objectChanged() {
  syncLocation();
  updateSnippets();
  const key = $("key").value.trim();
  if (!key) return;
  try {
    const err = await show("original", "");
    if (err) {
      $("original-dims").textContent = describeError(err);
    }
  } catch (e) {
    $("original-dims").textContent = e.message;
  }
  runProcess();
}

let debounce = null;
function processChanged() {
  renderSteps();
  updateSnippets();
  syncLocation();
  clearTimeout(debounce);
  debounce = setTimeout(runProcess, 300);
}

/** Ask the server: GET the processed object; its answer (image or OSS error) is the verdict. */
async function runProcess() {
  const process = $("process").value.trim();
  const key = $("key").value.trim();
  if (state.controller) state.controller.abort();
  if (!process || !key) {
    $("verdict-ok").hidden = true;
    $("error").hidden = true;
    return;
  }
  const controller = new AbortController();
  state.controller = controller;
  try {
    const err = await show("result", process, controller.signal);
    if (!controller.signal.aborted) showVerdict(err);
  } catch (e) {
    if (e.name !== "AbortError") showVerdict({ status: "", code: "Error", ec: "", message: e.message });
  }
}

// --- the steps of a process string and the builder --------------------------------------------------

function steps() {
  const text = $("process").value.trim();
  if (!text.startsWith("image/")) return [];
  return text.slice("image/".length).split("/").filter((s) => s !== "");
}

function setSteps(list) {
  $("process").value = list.length ? "image/" + list.join("/") : "";
  processChanged();
}

function renderSteps() {
  const list = steps();
  if (state.selectedStep >= list.length) state.selectedStep = -1;
  $("steps").replaceChildren(...list.map((step, i) => {
    const li = document.createElement("li");
    li.textContent = step;
    li.className = i === state.selectedStep ? "selected" : "";
    li.addEventListener("click", () => selectStep(i === state.selectedStep ? -1 : i));
    return li;
  }));
  $("replace-step").disabled = $("remove-step").disabled = state.selectedStep < 0;
}

function b64urlEncode(text) {
  return base64(new TextEncoder().encode(text)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlDecode(text) {
  try {
    const raw = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(raw, (c) => c.charCodeAt(0)));
  } catch (e) {
    return null;
  }
}

function fieldFor(param, label) {
  const wrap = document.createElement("label");
  const defaults = param.default !== null && param.default !== undefined ? "default " + param.default : "";
  wrap.title = [param.describe, param.doc, defaults, param.ec ? "EC " + param.ec : ""].filter(Boolean).join(" · ");
  wrap.append(label + (param.doc ? " — " + param.doc : ""));
  let input;
  if (param.type === "choice") {
    input = document.createElement("select");
    input.append(new Option(defaults ? "(" + defaults + ")" : "(none)", ""), ...param.values.map((v) => new Option(v, v)));
  } else {
    input = document.createElement("input");
    input.autocomplete = "off";
    input.spellcheck = false;
    if (param.type === "int") {
      input.type = "number";
      input.min = param.min;
      input.max = param.max;
      input.placeholder = param.min + ".." + param.max + (defaults ? ", " + defaults : "");
    } else if (param.type === "color") {
      input.placeholder = "RRGGBB" + (defaults ? ", " + defaults : "");
    } else if (param.type === "base64") {
      input.placeholder = "text (written as URL-safe base64)";
    }
  }
  input.dataset.key = param.key;
  input.dataset.type = param.type;
  input.id = "field-" + (param.key || "value");
  wrap.append(input);
  return wrap;
}

function renderFields() {
  const spec = state.byName[$("action").value];
  if (!spec) return;
  $("action-doc").textContent = spec.doc + (spec.required && spec.missing_ec ? " (needs a value: EC " + spec.missing_ec + ")" : "");
  const fields = [];
  if (spec.positional) fields.push(fieldFor(Object.assign({}, spec.positional, { key: "" }), "value"));
  for (const param of spec.params) fields.push(fieldFor(param, param.key));
  $("fields").replaceChildren(...fields);
}

/** The step the form describes: name[,value][,k_v...] with only the fields filled in. */
function stepFromForm() {
  const spec = state.byName[$("action").value];
  const parts = [spec.name];
  for (const input of $("fields").querySelectorAll("input, select")) {
    let value = input.value.trim();
    if (value === "") continue;
    if (input.dataset.type === "base64") value = b64urlEncode(value);
    parts.push(input.dataset.key ? input.dataset.key + "_" + value : value);
  }
  return parts.join(",");
}

function selectStep(i) {
  state.selectedStep = i;
  renderSteps();
  if (i < 0) return;
  const [name, ...args] = steps()[i].split(",");
  if (!state.byName[name]) return;
  $("action").value = name;
  renderFields();
  for (const arg of args) {
    const cut = arg.indexOf("_");
    const spec = state.byName[name];
    const key = cut > 0 && spec.params.some((p) => p.key === arg.slice(0, cut)) ? arg.slice(0, cut) : "";
    const raw = key ? arg.slice(cut + 1) : arg;
    const input = [...$("fields").querySelectorAll("input, select")].find((el) => el.dataset.key === key);
    if (!input) continue;
    input.value = input.dataset.type === "base64" ? (b64urlDecode(raw) ?? raw) : raw;
  }
}

function loadActions(doc) {
  state.actions = doc.actions;
  state.byName = Object.fromEntries(doc.actions.map((a) => [a.name, a]));
  $("action").replaceChildren(...doc.actions.map((a) => new Option(a.name, a.name)));
  renderFields();
}

// --- snippets ----------------------------------------------------------------------------------------

function pyString(text) { return "'" + text.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'"; }

function updateSnippets() {
  const bucket = $("bucket").value.trim() || "examplebucket";
  const key = $("key").value.trim() || "example.jpg";
  const process = $("process").value.trim();
  const url = location.origin + objectPath(bucket, key) + (process ? "?" + queryString([["x-oss-process", process]]) : "");
  const id = $("access-key-id").value.trim() || "<yourAccessKeyId>";
  const ext = (process.match(/format,(\w+)/) || [])[1] || (key.split(".").pop() || "jpg");
  $("snippet-url").textContent = url;
  $("snippet-curl").textContent = "curl -o result." + ext + " '" + url.replace(/'/g, "'\\''") + "'";
  const call = { id, bucket, key, process, endpoint: location.origin, prefix: MOUNT.replace(/\/$/, "") };
  $("snippet-oss2").textContent = oss2Snippet(call);
  $("snippet-alioss").textContent = aliOssSnippet(call);
}

// Both SDKs keep only the scheme and host of an endpoint (and sign "/bucket/key", as the server checks),
// so under a mount prefix each snippet puts the prefix back into every request URL through the SDK's
// own HTTP hook: oss2's session, ali-oss's urllib option.

function oss2Snippet({ id, bucket, key, process, endpoint, prefix }) {
  // oss2 addresses an IP or localhost endpoint path style; any other host name as bucket.host unless told.
  const virtualHost = !/^[\d.]+$|^\[/.test(location.hostname) && location.hostname !== "localhost";
  const auth = "oss2.Auth(" + pyString(id) + ", '<yourAccessKeySecret>')";
  const options = (virtualHost ? ", is_path_style=True" : "") + (prefix ? ", session=MountedSession()" : "");
  const lines = ["import oss2"];
  if (prefix) {
    lines.push("", "endpoint = " + pyString(endpoint), "",
      "class MountedSession(oss2.Session):",
      "    # oss2 keeps only the host of an endpoint; the server is mounted at " + prefix,
      "    def do_request(self, req, timeout):",
      "        req.url = req.url.replace(endpoint, endpoint + " + pyString(prefix) + ", 1)",
      "        return super().do_request(req, timeout)",
      "");
  }
  lines.push("bucket = oss2.Bucket(" + auth + ", " + (prefix ? "endpoint" : pyString(endpoint)) + ", " +
      pyString(bucket) + options + ")",
    "result = bucket.get_object(" + pyString(key) + (process ? ", process=" + pyString(process) : "") + ")",
    "data = result.read()");
  return lines.join("\n");
}

function aliOssSnippet({ id, bucket, key, process, endpoint, prefix }) {
  // ali-oss addresses an IP endpoint by Host header; any other host name path style (sldEnable).
  const ipEndpoint = /^[\d.]+$|^\[/.test(location.hostname);
  const lines = ["const OSS = require('ali-oss');"];
  if (prefix) {
    lines.push("const urllib = require('urllib');  // the HTTP client ali-oss itself uses, installed with it",
      "const endpoint = " + pyString(endpoint) + ";",
      "// ali-oss keeps only the host of an endpoint; the server is mounted at " + prefix,
      "const mounted = {request: (url, options) => urllib.request(url.replace(endpoint, endpoint + " +
        pyString(prefix) + "), options)};");
  }
  lines.push("const client = new OSS({region: 'oss-cn-hangzhou', accessKeyId: " + pyString(id) +
      ", accessKeySecret: '<yourAccessKeySecret>', bucket: " + pyString(bucket) +
      ", endpoint" + (prefix ? "" : ": " + pyString(endpoint)) + (ipEndpoint ? "" : ", sldEnable: true") +
      (prefix ? ", urllib: mounted" : "") + "});",
    "const result = await client.get(" + pyString(key) + (process ? ", {process: " + pyString(process) + "}" : "") + ");");
  return lines.join("\n");
}

async function copy(id) {
  const text = $(id).textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-status").textContent = "Copied.";
  } catch (e) {
    const range = document.createRange();
    range.selectNodeContents($(id));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("copy-status").textContent = "Selected: press Ctrl+C to copy.";
  }
}

// --- styles --------------------------------------------------------------------------------------------

function styleStatus(text, kind) {
  $("style-status").textContent = text;
  $("style-status").className = kind || "";
}

async function saveStyle() {
  const bucket = $("bucket").value.trim();
  const name = $("style-name").value.trim();
  const content = $("process").value.trim();
  if (!bucket || !name || !content) { styleStatus("Type a bucket, a style name and a process string.", "bad"); return; }
  try {
    const body = "<Style><Content>" + xmlEscape(content) + "</Content></Style>";
    const response = await ossFetch("PUT", bucket, "", [["style", ""], ["styleName", name]],
      { body, headers: { "Content-Type": "application/xml" } });
    if (!response.ok) {
      const err = parseError(response.status, await response.text());
      styleStatus("Not saved: " + (err ? describeError(err) : "HTTP " + response.status), "bad");
      return;
    }
    styleStatus("Saved style " + name + " = " + content, "good");
    listStyles(true);
  } catch (e) {
    styleStatus("Not saved: " + e.message, "bad");
  }
}

async function listStyles(quiet) {
  const bucket = $("bucket").value.trim();
  if (!bucket) return;
  try {
    const response = await ossFetch("GET", bucket, "", [["style", ""]]);
    const text = await response.text();
    if (!response.ok) {
      if (!quiet) {
        const err = parseError(response.status, text);
        styleStatus("Cannot list styles: " + (err ? describeError(err) : "HTTP " + response.status), "bad");
      }
      return;
    }
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const styles = [...doc.querySelectorAll("Style")].map((s) => [
      (s.querySelector("Name") || {}).textContent, (s.querySelector("Content") || {}).textContent]);
    $("style-list").replaceChildren(...styles.map(([n, c]) => new Option(c, n)));
    if (!quiet) styleStatus(styles.length + " styles: " + styles.map(([n]) => n).join(", "));
  } catch (e) {
    if (!quiet) styleStatus("Cannot list styles: " + e.message, "bad");
  }
}

function applyStyle() {
  const name = $("style-name").value.trim();
  if (!name) { styleStatus("Type a style name.", "bad"); return; }
  $("process").value = "style/" + name;
  processChanged();
}

// --- the page ------------------------------------------------------------------------------------------

function syncLocation() {
  const params = new URLSearchParams();
  for (const [name, id] of [["bucket", "bucket"], ["key", "key"], ["process", "process"]]) {
    if ($(id).value.trim()) params.set(name, $(id).value.trim());
  }
  history.replaceState(null, "", "?" + params.toString());
}

async function start() {
  const params = new URLSearchParams(location.search);
  for (const name of ["bucket", "key", "process"]) {
    if (params.has(name)) $(name).value = params.get(name);
  }
  $("bucket").addEventListener("change", () => { $("key").value = ""; listKeys(); listStyles(true); });
  $("list-keys").addEventListener("click", listKeys);
  $("key-select").addEventListener("change", () => {
    if ($("key-select").value) { $("key").value = $("key-select").value; objectChanged(); }
  });
  $("key").addEventListener("change", objectChanged);
  $("process").addEventListener("input", processChanged);
  $("action").addEventListener("change", () => { state.selectedStep = -1; renderSteps(); renderFields(); });
  $("add-step").addEventListener("click", () => { setSteps([...steps(), stepFromForm()]); });
  $("replace-step").addEventListener("click", () => {
    const list = steps();
    list[state.selectedStep] = stepFromForm();
    setSteps(list);
  });
  $("remove-step").addEventListener("click", () => {
    const list = steps();
    list.splice(state.selectedStep, 1);
    state.selectedStep = -1;
    setSteps(list);
  });
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => copy(button.dataset.copy));
  }
  for (const id of ["access-key-id", "access-key-secret"]) {
    $(id).addEventListener("change", () => { updateSnippets(); listBuckets(); runProcess(); });
  }
  $("save-style").addEventListener("click", saveStyle);
  $("apply-style").addEventListener("click", applyStyle);
  $("list-styles").addEventListener("click", () => listStyles(false));

  renderSteps();
  updateSnippets();
  try {
    const response = await fetch("actions.json", { cache: "no-cache" });
    loadActions(await response.json());
  } catch (e) {
    $("action-doc").textContent = "The action tables could not be loaded: " + e.message;
  }
  if ($("bucket").value) {
    if ($("key").value) objectChanged();
    await listKeys();
  }
  document.body.dataset.ready = "true";
}

start();
