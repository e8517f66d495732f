// Loads an rfmx report from disk in the system chromium (headless, via puppeteer-core) and checks:
// no console errors or page errors, no failed requests, no request leaves file:// (no network),
// every <img> decodes, every <audio> source is an existing file whose metadata chromium loads
// (duration > 0; `ogg` counts those typed audio/ogg, `playable` those canPlayType accepts), no <script>
// element exists (escaping), and the page does not overflow horizontally at 1280 px or 390 px, nor
// does any table stick out of the page. Reports each page's height and player count per width.
//
//   node tests/browser/check.mjs path/to/index.html [/usr/bin/chromium]
// With EXPECT_TEXT set, that text must be visible in the page as text (e.g. a prompt holding
// `<script>`: escaped, shown, not run). Prints a JSON summary; exits 1 listing every problem.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const [, , html, chromium = '/usr/bin/chromium'] = process.argv;
if (!html || !fs.existsSync(html)) {
  console.error(`usage: check.mjs INDEX.html [CHROMIUM]; no such file: ${html}`);
  process.exit(2);
}
const url = pathToFileURL(path.resolve(html)).href;
const problems = [];
const requests = [];
const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-default-apps', '--disable-sync'],
});
const summary = { url, views: [] };
try {
  for (const [width, height] of [[1280, 900], [390, 844]]) {
    const page = await browser.newPage();
    await page.setViewport({ width, height });
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error at ${width}px: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error at ${width}px: ${e.message}`));
    page.on('requestfailed', (r) => {
      // A media element aborts its request once it has read what it needs (metadata); whether
      // every clip actually loads is checked below.
      if (r.resourceType() === 'media' && r.failure()?.errorText === 'net::ERR_ABORTED') return;
      problems.push(`request failed at ${width}px: ${r.url()} (${r.failure()?.errorText})`);
    });
    await page.setRequestInterception(true);
    page.on('request', (r) => {
      const u = r.url();
      requests.push(u);
      if (u.startsWith('file://') || u.startsWith('data:')) {
        r.continue();
      } else {
        problems.push(`network request at ${width}px: ${u}`);
        r.abort();
      }
    });
    await page.goto(url, { waitUntil: 'load', timeout: 20000 });
    const view = await page.evaluate(async () => {
      const imgs = [...document.images].map((i) => ({
        src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0 }));
      const audios = [...document.querySelectorAll('audio')];
      // as the page asks (counted before the loop below sets it to load every clip)
      const preloaded = audios.filter((a) => a.getAttribute('preload') === 'metadata').length;
      const audio = await Promise.all(audios.map((a) => new Promise((resolve) => {
        // The clip is named by a <source> child with its type (or by the element's own src).
        const source = a.querySelector('source');
        const src = source ? source.getAttribute('src') : a.getAttribute('src');
        const type = source ? source.getAttribute('type') || '' : '';
        const playable = type === '' || a.canPlayType(type) !== '';
        const done = (ok, why) => resolve({ src, type, playable, ok, why });
        a.addEventListener('loadedmetadata', () => done(a.duration > 0, `duration ${a.duration}`), { once: true });
        a.addEventListener('error', () => done(false, `media error ${a.error && a.error.code}`), { once: true });
        setTimeout(() => done(false, 'timeout'), 10000);
        a.preload = 'metadata';
        a.load();
      })));
      return {
        imgs, audio,
        scripts: document.querySelectorAll('script').length,
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        height: document.documentElement.scrollHeight,
        tables: [...document.querySelectorAll('table')]
          .map((t) => Math.ceil(t.getBoundingClientRect().right - document.documentElement.clientWidth))
          .filter((x) => x > 1),
        metadata: preloaded,
        text: document.body.innerText.length,
        body: document.body.innerText,
      };
    });
    for (const i of view.imgs) if (!i.ok) problems.push(`image does not load at ${width}px: ${i.src}`);
    for (const a of view.audio) {
      const file = fileURLToPath(new URL(a.src, url));
      if (!fs.existsSync(file)) problems.push(`audio src is not a file: ${a.src}`);
      if (!a.ok) problems.push(`audio does not load at ${width}px: ${a.src} (${a.why})`);
    }
    const expect = process.env.EXPECT_TEXT;
    if (expect && !view.body.includes(expect)) problems.push(`text not shown at ${width}px: ${expect}`);
    if (view.scripts !== 0) problems.push(`${view.scripts} <script> element(s) in the page`);
    if (view.overflow > 1) problems.push(`page overflows horizontally by ${view.overflow}px at ${width}px`);
    for (const t of view.tables) problems.push(`a table sticks out ${t}px past the page at ${width}px`);
    summary.views.push({ width, images: view.imgs.length, audio: view.audio.length,
                         scripts: view.scripts, overflow: view.overflow, text: view.text,
                         height: view.height, metadata: view.metadata,
                         ogg: view.audio.filter((a) => a.ok && a.type.startsWith('audio/ogg')).length,
                         playable: view.audio.filter((a) => a.playable).length });
    await page.close();
  }
} catch (e) {
  problems.push(`check crashed: ${e.stack || e}`);
} finally {
  await browser.close();
}
summary.requests = requests.length;
summary.problems = problems;
console.log(JSON.stringify(summary));
process.exit(problems.length ? 1 : 0);
