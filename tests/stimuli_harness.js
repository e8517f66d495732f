// A scripted subject for tests/stimuli.rs: picks a subject, checks that an unplayed or unrated clip
// cannot be submitted, plays every clip to the end (really, at 4x speed), rates it, and returns the
// exports. Evaluated as one expression by tests/stimuli_browser.js.
(async () => {
  const $ = (id) => document.getElementById(id);
  const log = [];
  const subject = "S02";
  $("subject").value = subject;
  $("begin").click();
  const n = Number($("trial-count").textContent);
  const player = $("player");
  player.muted = true;
  const stimuli = [];
  for (let i = 0; i < n; i++) {
    if (Number($("trial-no").textContent) !== i + 1) throw new Error("trial number " + $("trial-no").textContent);
    const next = $("next");
    if (!next.disabled) throw new Error("trial " + (i + 1) + ": next enabled before playing");
    const sliders = Array.from(document.querySelectorAll("#questions input[type=range]"));
    const rate = () => sliders.forEach((s, j) => { s.value = String((i * 7 + j * 13) % 101); s.dispatchEvent(new Event("input")); });
    const play = async () => {
      const ended = new Promise((res, rej) => {
        player.addEventListener("ended", res, { once: true });
        player.addEventListener("error", () => rej(new Error("audio error " + player.src)), { once: true });
      });
      player.playbackRate = 4.0;
      await player.play();
      await ended;
      if (i === 0) log.push("duration " + player.duration);
    };
    stimuli.push(player.src.split("/").pop().replace(".wav", ""));
    if (i % 2 === 0) {
      rate();
      if (!next.disabled) throw new Error("trial " + (i + 1) + ": next enabled for an unplayed clip");
      next.click();
      if (Number($("trial-no").textContent) !== i + 1) throw new Error("an unplayed clip was submitted");
      if (i === 2) {
        // seeking to the end and letting it "end" is not listening
        await new Promise((res) => { player.addEventListener("loadedmetadata", res, { once: true }); if (player.readyState >= 1) res(); });
        player.currentTime = player.duration - 0.05;
        await play();
        if (!next.disabled) throw new Error("a skipped clip counts as played");
        log.push("skip refused: " + $("play-status").textContent);
      }
      await play();
    } else {
      await play();
      if (!next.disabled) throw new Error("trial " + (i + 1) + ": next enabled with unset sliders");
      next.click();
      if (Number($("trial-no").textContent) !== i + 1) throw new Error("an unrated clip was submitted");
      rate();
    }
    if (next.disabled) throw new Error("trial " + (i + 1) + ": still disabled: " + $("why-disabled").textContent);
    next.click();
  }
  if ($("done").hidden) throw new Error("not finished");
  return { log, subject, stimuli, csv: window.rfmxExport("csv"), json: window.rfmxExport("json") };
})()
