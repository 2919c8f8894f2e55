// smol-durable inspector: live regions, signal forms and action buttons. Part of smol-durable
// (same licence); no dependencies, no build step. Everything it shows comes from the server as
// HTML already escaped; it only moves that HTML and sends JSON.
(function () {
  "use strict";
  var body = document.body;
  var token = body.getAttribute("data-token") || "";

  function withToken(url) {
    if (!token) return url;
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function headers(json) {
    var h = {};
    if (token) h["Authorization"] = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  // Someone typing into a region keeps it: a refresh must not eat their input.
  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return true;
    }
    return region.querySelector("form[data-dirty]") !== null;
  }

  var refreshing = false;
  var again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(location.href, { headers: headers(false) })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var regions = document.querySelectorAll("[data-live]");
        for (var i = 0; i < regions.length; i++) {
          var old = regions[i];
          var replacement = fresh.getElementById(old.id);
          if (replacement && !busy(old)) old.replaceWith(document.importNode(replacement, true));
        }
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  var timer = null;
  function soon() {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, 100);
  }

  var stream = body.getAttribute("data-stream");
  if (stream && window.EventSource) {
    var source = new EventSource(withToken(stream));
    source.onmessage = soon;
    source.addEventListener("run", function (event) {
      // A finished run changes no more: stop asking (the browser would reconnect forever).
      try {
        var state = JSON.parse(event.data).state;
        if (state === "completed" || state === "failed" || state === "cancelled") source.close();
      } catch (e) {}
      soon();
    });
    source.addEventListener("changed", soon);
  }

  function show(target, ok, lines) {
    if (!target) return;
    target.textContent = "";
    target.className = ok ? "note ok" : "note errors";
    for (var i = 0; i < lines.length; i++) {
      var item = document.createElement("div");
      item.textContent = lines[i];
      target.appendChild(item);
    }
  }

  // An error's message; a schema mismatch lists each validation error on its own line.
  function lines(text) {
    var at = text.indexOf(": /");
    var parts = text.split("; ");
    if (parts.length > 1 || at >= 0) {
      var head = text.slice(0, text.indexOf(": ") + 1);
      var rest = text.slice(head.length).trim().split("; ");
      return [head].concat(rest);
    }
    return [text];
  }

  function send(method, url, payload, target, then) {
    var init = { method: method, headers: headers(payload !== undefined) };
    if (payload !== undefined) init.body = JSON.stringify(payload);
    return fetch(withToken(url), init).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) { show(target, false, lines(text)); return false; }
        var answer = {};
        try { answer = JSON.parse(text); } catch (e) {}
        if (then) { then(answer); } else { show(target, true, ["done"]); }
        soon();
        return true;
      });
    }).catch(function (error) { show(target, false, [String(error)]); return false; });
  }

  // A signal form: its fields (typed by data-type) make the payload, or its one field is the
  // whole payload (data-whole).
  function payloadOf(form) {
    var fields = form.querySelectorAll("[data-type]");
    var whole = form.hasAttribute("data-whole");
    var payload = {};
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      var type = field.getAttribute("data-type");
      var value;
      if (type === "boolean") {
        value = field.checked;
      } else if (field.value === "" && type !== "string") {
        // An empty JSON editor is the payload null; an empty optional field is left out.
        if (whole && type === "json") return null;
        if (whole) throw new Error("enter a value");
        continue;
      } else if (type === "number" || type === "integer") {
        value = Number(field.value);
        if (isNaN(value)) throw new Error(field.name + ": not a number");
      } else if (type === "json") {
        try { value = JSON.parse(field.value); } catch (e) {
          throw new Error((field.name || "payload") + ": not JSON (" + e.message + ")");
        }
      } else {
        if (field.value === "" && !field.required && !whole) continue;
        value = field.value;
      }
      if (whole) return value;
      payload[field.name] = value;
    }
    return payload;
  }

  document.addEventListener("input", function (event) {
    var form = event.target.form;
    if (form) form.setAttribute("data-dirty", "");
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var url = form.getAttribute("data-signal");
    if (!url) return;
    event.preventDefault();
    var target = form.querySelector(".note");
    var payload;
    try { payload = payloadOf(form); } catch (error) { show(target, false, [error.message]); return; }
    send("POST", url, payload, target, function (answer) {
      form.removeAttribute("data-dirty");
      if (document.activeElement) document.activeElement.blur();
      show(target, true, [answer.delivered ? "sent: the run continues" : "sent: the run takes it at its next wait"]);
    });
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-action]") : null;
    if (!button) return;
    event.preventDefault();
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var target = document.getElementById("action-note");
    var payload;
    var input = button.getAttribute("data-input");
    if (input) {
      var field = document.getElementById(input);
      payload = field && field.value ? { beforeStep: field.value } : {};
    }
    var next = button.getAttribute("data-then");
    send(button.getAttribute("data-method") || "POST", button.getAttribute("data-action"), payload, target,
      function (answer) {
        if (next) { location.href = withToken(next); return; }
        if (answer.queued) {
          show(target, true, ["fork queued as " + answer.runId + " (smol-durable worker runs it); to run it here instead:", answer.localCommand]);
        } else {
          show(target, true, [button.textContent.trim() + ": " + (answer.outcome || "done")]);
        }
      });
  });
})();
