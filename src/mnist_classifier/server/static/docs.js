// Offline API docs: renders /openapi.json (OpenAPI 3.1) into plain HTML, with curl examples and a
// "try it" form per endpoint. No CDN, no framework: it must work on a machine without internet.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
};

let spec = null;

function prose(text) {
  // `code` spans of the descriptions as <code>; everything else stays plain text (never HTML).
  return text.split(/`([^`]+)`/).map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

function resolve(schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()] || {};
  return schema || {};
}

function typeName(schema) {
  if (!schema) return "any";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(typeName).join(" or ");
  if (schema.type === "array") return `array of ${typeName(schema.items)}`;
  if (schema.format === "binary") return "file";
  return schema.type || "any";
}

function schemaList(schema) {
  const resolved = resolve(schema);
  if (!resolved.properties) return el("p", {}, el("span", { class: "type" }, typeName(schema)));
  const required = new Set(resolved.required || []);
  return el("ul", { class: "schema" }, Object.entries(resolved.properties).map(([name, prop]) =>
    el("li", {}, el("code", {}, name), " ", el("span", { class: "type" }, typeName(prop)),
       required.has(name) ? el("span", { class: "req" }, " required") : null,
       prop.description ? [" — ", prose(prop.description)] : "")));
}

function curlFor(path, method, operation) {
  const url = `${location.origin}${path}`;
  const content = operation.requestBody ? operation.requestBody.content : null;
  if (!content) return `curl ${url}`;
  if (content["multipart/form-data"]) {
    const props = resolve(content["multipart/form-data"].schema).properties || {};
    if (props.files) return `curl -F files=@one.png -F files=@two.png ${url}`;
    return `curl -F file=@digit.png ${url}`;
  }
  return `curl -X ${method.toUpperCase()} -H 'Content-Type: application/json' -d '{"image": "<base64>"}' ${url}`;
}

function shorten(value) {
  // The 28x28 grids would fill the screen; show their shape instead.
  return JSON.stringify(value, (key, v) => (key === "image" && Array.isArray(v) ? `[${v.length}x${v[0].length} grid]` : v), 2);
}

function tryIt(path, method, operation) {
  const out = el("output", {});
  const send = el("button", { type: "button" }, "Send");
  const box = el("div", { class: "try" });
  const content = operation.requestBody ? operation.requestBody.content : null;
  let input = null;
  if (content && content["multipart/form-data"]) {
    const many = "files" in (resolve(content["multipart/form-data"].schema).properties || {});
    input = el("input", { type: "file", accept: "image/*", "aria-label": `image file for ${path}` });
    if (many) input.multiple = true;
    box.append(input);
  }
  send.addEventListener("click", async () => {
    let body;
    if (input) {
      if (!input.files.length) { out.replaceChildren(el("pre", {}, "Choose an image file first.")); return; }
      body = new FormData();
      const field = input.multiple ? "files" : "file";
      for (const file of input.files) body.append(field, file);
    }
    const started = performance.now();
    const response = await fetch(path, { method: method.toUpperCase(), body });
    const text = await response.text();
    let shown = text;
    try { shown = shorten(JSON.parse(text)); } catch (error) { /* not JSON: show as it is */ }
    const ms = (performance.now() - started).toFixed(0);
    out.replaceChildren(el("pre", {}, `HTTP ${response.status} in ${ms} ms\n${shown}`));
  });
  box.append(send, out);
  return box;
}

function operationCard(path, method, operation) {
  const id = `${method}-${path.replace(/\W+/g, "-")}`;
  const card = el("section", { class: "op", id },
    el("h2", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), el("code", {}, path),
       el("span", { class: "summary" }, operation.summary || "")));
  if (operation.description) card.append(el("p", {}, prose(operation.description)));
  if (operation.parameters && operation.parameters.length) {
    card.append(el("h3", {}, "Query parameters"), el("ul", { class: "schema" }, operation.parameters.map((p) =>
      el("li", {}, el("code", {}, p.name), " ", el("span", { class: "type" }, typeName(p.schema)),
         p.schema && "default" in p.schema ? ` (default ${JSON.stringify(p.schema.default)})` : ""))));
  }
  if (operation.requestBody) {
    card.append(el("h3", {}, "Request body"));
    for (const [type, media] of Object.entries(operation.requestBody.content)) {
      card.append(el("p", {}, el("code", {}, type)), schemaList(media.schema));
    }
  }
  card.append(el("h3", {}, "Responses"));
  for (const [code, response] of Object.entries(operation.responses || {})) {
    const media = response.content && response.content["application/json"];
    card.append(el("p", {}, el("span", { class: "code" }, code), ` ${response.description || ""} `,
                   media ? el("span", { class: "type" }, typeName(media.schema)) : ""));
  }
  card.append(el("h3", {}, "Example"), el("pre", {}, curlFor(path, method, operation)));
  card.append(el("h3", {}, "Try it"), tryIt(path, method, operation));
  return { card, id };
}

async function main() {
  spec = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version} — API`;
  document.getElementById("description").replaceChildren(...prose(spec.info.description || ""));
  const toc = document.getElementById("toc");
  const operations = document.getElementById("operations");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const { card, id } = operationCard(path, method, operation);
      operations.append(card);
      toc.append(el("a", { href: `#${id}` }, `${method.toUpperCase()} ${path}`));
    }
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) {
    if (/Validation|HTTPValidation/.test(name)) continue;
    schemas.append(el("section", { class: "op", id: `schema-${name}` }, el("h2", {}, name), schemaList(schema)));
  }
  document.documentElement.dataset.ready = "1";
}

main().catch((error) => {
  document.getElementById("description").textContent = `Could not read /openapi.json: ${error.message}`;
});
