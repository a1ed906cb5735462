(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("card-data").textContent);
  var cards = data.cards, words = new RegExp(data.whitespace), PAGE = 50;
  var state = { filter: "all", query: "", page: 0, printing: false }, shown = cards, haystack = null;
  var box = document.getElementById("cards"), range = document.getElementById("card-range");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;  // text, never markup: answers are shown as written
    return e;
  }
  function badge(ok, text) { return el("span", "badge " + (ok ? "ok" : "bad"), text); }
  function split(text) { return text.split(words).filter(function (w) { return w.length > 0; }); }
  function side(label, a) {
    var div = el("div", "side " + label), head = el("h4", null, label + " ");
    head.appendChild(badge(a.eos, (a.eos ? "stopped" : "hit max_new_tokens") + ", " + a.n + " tokens"));
    if (a.m !== null) head.appendChild(badge(a.m, a.m ? "match" : "no match"));
    head.appendChild(badge(a.r <= data.max_repetition, "repetition " + Math.round(100 * a.r) + "%"));
    if (a.l.length) head.appendChild(badge(false, "leaks " + a.l.join(" ")));
    div.appendChild(head);
    var pre = el("pre", a.l.length ? "raw" : null, a.l.length ? a.raw : a.t);
    if (a.l.length) pre.title = "decoded with special tokens kept, so the leak shows";
    div.appendChild(pre);
    return div;
  }
  function diff(card) {
    var details = el("details", "diff"), base = split(card.base.t), tuned = split(card.tuned.t), i = 0, j = 0;
    details.appendChild(el("summary", null, "word diff, base → tuned"));
    card.d.forEach(function (run) {
      var op = run[0], n = run[1], text;
      if (op === "s") { text = base.slice(i, i + n).join(" "); i += n; j += n; details.appendChild(document.createTextNode(text + " ")); return; }
      if (op === "d") { text = base.slice(i, i + n).join(" "); i += n; details.appendChild(el("del", null, text)); }
      else { text = tuned.slice(j, j + n).join(" "); j += n; details.appendChild(el("ins", null, text)); }
      details.appendChild(document.createTextNode(" "));
    });
    return details;
  }
  function card(c) {
    var div = el("div", "card"), title = el("div");
    title.appendChild(el("strong", null, c.q));
    if (c.e !== null) { title.appendChild(document.createTextNode(" ")); title.appendChild(el("span", "muted", "expected: " + c.e)); }
    div.appendChild(title);
    var pair = el("div", "pair");
    pair.appendChild(side("base", c.base));
    pair.appendChild(side("tuned", c.tuned));
    data.others.forEach(function (name) { pair.appendChild(side(name, c.o[name])); });  // a baseline model, say
    div.appendChild(pair);
    if (c.j) {  // the judge's verdict on this pair: the tuned answer's side, both orders' replies (a reward judge's rewards)
      var judged = el("details", "judged");
      judged.appendChild(el("summary", null, "judge: tuned " + ({win: "wins", tie: "ties", loss: "loses"}[c.j.v] || "has no verdict") + " against base"));
      judged.appendChild(el("div", "muted", "tuned shown first: " + (c.j.f || "none") + ": " + c.j.r[0]));
      judged.appendChild(el("div", "muted", "tuned shown second: " + (c.j.s || "none") + ": " + c.j.r[1]));
      div.appendChild(judged);
    }
    div.appendChild(diff(c));
    return div;
  }
  function matches(c, index) {
    if (state.filter !== "all" && !c[state.filter]) return false;
    if (!state.query) return true;
    if (haystack === null) haystack = cards.map(function (x) { return [x.q, x.e || "", x.base.t, x.tuned.t].concat(data.others.map(function (n) { return x.o[n].t; })).join("\n").toLowerCase(); });
    return haystack[index].indexOf(state.query) >= 0;
  }
  function draw() {
    shown = cards.filter(matches);
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.printing ? 0 : state.page * PAGE, frag = document.createDocumentFragment();
    var end = state.printing ? shown.length : Math.min(shown.length, start + PAGE);
    shown.slice(start, end).forEach(function (c) { frag.appendChild(card(c)); });
    box.replaceChildren(frag);
    range.textContent = shown.length ? (start + 1).toLocaleString("en") + "–" + end.toLocaleString("en") + " of " + shown.length.toLocaleString("en") : "no question matches";
    document.getElementById("card-prev").disabled = state.page === 0;
    document.getElementById("card-next").disabled = state.page >= pages - 1;
  }
  document.querySelectorAll(".filters [data-filter]").forEach(function (button) {
    button.addEventListener("click", function () {
      state.filter = button.dataset.filter; state.page = 0;
      document.querySelectorAll(".filters [data-filter]").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      draw();
    });
  });
  document.getElementById("card-search").addEventListener("input", function (event) { state.query = event.target.value.trim().toLowerCase(); state.page = 0; draw(); });
  document.getElementById("card-prev").addEventListener("click", function () { state.page -= 1; draw(); });
  document.getElementById("card-next").addEventListener("click", function () { state.page += 1; draw(); });
  // printed, the report holds every card the filter and search select, not one page of them
  window.addEventListener("beforeprint", function () { state.printing = true; draw(); });
  window.addEventListener("afterprint", function () { state.printing = false; draw(); });
  draw();
})();
