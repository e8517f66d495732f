// rfmx listening test: presents the subject's trials in order, asks every question on a 0-100
// slider, refuses to go on before the clip has been played to the end and every slider set, keeps
// progress in localStorage and exports CSV / JSON. Works from file:// (no fetch, no server).
(function () {
  "use strict";
  var T = window.RFMX_TEST;
  var $ = function (id) { return document.getElementById(id); };
  var state = null; // {subject, pos, answers: [{trial, stimulus, ratings:{q:v}, listened_s, plays, submitted_at}]}
  var current = null; // per-trial: {played, plays, listened, values:{}}

  function storageKey(subject) { return "rfmx-listening:" + T.set_id + ":" + subject; }
  function save() { try { localStorage.setItem(storageKey(state.subject), JSON.stringify(state)); } catch (e) {} }
  function load(subject) {
    try { var s = localStorage.getItem(storageKey(subject)); return s ? JSON.parse(s) : null; } catch (e) { return null; }
  }

  function init() {
    $("instructions").textContent = T.instructions;
    var subjects = Object.keys(T.orders);
    subjects.forEach(function (s) {
      var o = document.createElement("option"); o.value = s; o.textContent = s; $("subject").appendChild(o);
    });
    var params = new URLSearchParams(window.location.search);
    if (params.get("subject") && T.orders[params.get("subject")]) $("subject").value = params.get("subject");
    $("begin").addEventListener("click", begin);
    $("next").addEventListener("click", submitTrial);
    $("export-csv").addEventListener("click", function () { download("csv"); });
    $("export-json").addEventListener("click", function () { download("json"); });
  }

  function begin() {
    var subject = $("subject").value;
    state = load(subject) || { subject: subject, pos: 0, answers: [] };
    $("start").hidden = true;
    show();
  }

  function order() { return T.orders[state.subject]; }

  function show() {
    var ids = order();
    if (state.pos >= ids.length) { $("trial").hidden = true; $("done").hidden = false; return; }
    $("trial").hidden = false;
    var id = ids[state.pos], stim = T.stimuli[id];
    current = { played: false, plays: 0, listened: 0, values: {}, skipped: false };
    $("trial-no").textContent = state.pos + 1;
    $("trial-count").textContent = ids.length;
    var player = $("player");
    player.src = stim.file;
    player.onplay = function () { current.plays += 1; updateStatus(); };
    // "Played" = reached the end with at least 90% of the clip actually played (player.played
    // holds the ranges really heard, so seeking to the end does not count).
    player.onended = function () {
      var heard = 0;
      for (var i = 0; i < player.played.length; i++) heard += player.played.end(i) - player.played.start(i);
      current.listened = heard;
      current.played = player.duration > 0 && heard >= 0.9 * player.duration;
      current.skipped = !current.played;
      updateStatus();
    };
    var box = $("questions");
    box.innerHTML = "";
    stim.questions.forEach(function (q) {
      var div = document.createElement("div");
      div.className = "question untouched";
      var p = document.createElement("p"); p.textContent = q.text; div.appendChild(p);
      var scale = document.createElement("div"); scale.className = "scale";
      var input = document.createElement("input");
      input.type = "range"; input.min = "0"; input.max = "100"; input.step = "1"; input.value = "50";
      input.name = q.id; input.setAttribute("aria-label", q.text);
      var value = document.createElement("span"); value.className = "value"; value.textContent = "–";
      var touched = function () {
        current.values[q.id] = Number(input.value); value.textContent = input.value;
        div.classList.remove("untouched"); updateStatus();
      };
      // "input" for drags and keys; "change"/"pointerup" also count a click that keeps the value.
      input.addEventListener("input", touched);
      input.addEventListener("change", touched);
      input.addEventListener("pointerup", touched);
      scale.appendChild(input); scale.appendChild(value); div.appendChild(scale);
      var ends = document.createElement("div"); ends.className = "ends";
      var lo = document.createElement("span"); lo.textContent = "0 – " + q.low;
      var hi = document.createElement("span"); hi.textContent = q.high + " – 100";
      ends.appendChild(lo); ends.appendChild(hi); div.appendChild(ends);
      box.appendChild(div);
    });
    updateStatus();
  }

  function missing() {
    var stim = T.stimuli[order()[state.pos]];
    return stim.questions.filter(function (q) { return !(q.id in current.values); });
  }

  function updateStatus() {
    var m = missing();
    $("play-status").textContent = current.played ? "Played." :
      current.skipped ? "Part of the clip was skipped: play it through." :
      (current.plays ? "Playing… listen to the end." : "Press play and listen to the whole clip.");
    var why = [];
    if (!current.played) why.push("play the clip to the end");
    if (m.length) why.push("set " + m.length + " slider" + (m.length > 1 ? "s" : ""));
    $("why-disabled").textContent = why.length ? "To continue: " + why.join(" and ") + "." : "";
    $("next").disabled = why.length > 0;
  }

  function submitTrial() {
    if (!current.played || missing().length) { updateStatus(); return; } // unplayed or unrated: refused
    $("player").pause();
    state.answers.push({
      trial: state.pos + 1, stimulus: order()[state.pos], ratings: current.values,
      plays: current.plays, listened_s: Math.round(current.listened * 100) / 100,
      submitted_at: new Date().toISOString()
    });
    state.pos += 1;
    save();
    show();
  }

  function csvField(v) {
    var s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    var lines = ["set_id,subject,trial,stimulus,question,rating,plays,listened_s,submitted_at"];
    state.answers.forEach(function (a) {
      T.questions.forEach(function (q) {
        if (!(q in a.ratings)) return;
        lines.push([T.set_id, state.subject, a.trial, a.stimulus, q, a.ratings[q], a.plays, a.listened_s, a.submitted_at].map(csvField).join(","));
      });
    });
    return lines.join("\n") + "\n";
  }

  function exportJson() {
    return JSON.stringify({ set_id: T.set_id, name: T.name, subject: state.subject, answers: state.answers }, null, 2);
  }

  function download(kind) {
    var text = kind === "csv" ? exportCsv() : exportJson();
    var blob = new Blob([text], { type: kind === "csv" ? "text/csv" : "application/json" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = T.name + "_" + state.subject + "." + kind;
    document.body.appendChild(a); a.click(); a.remove();
  }

  // For scripted checks (headless browsers): the export without a download.
  window.rfmxExport = function (kind) { return kind === "json" ? exportJson() : exportCsv(); };
  init();
})();
