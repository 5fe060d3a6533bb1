// chat.test.mjs - the example chat in a real browser: Debian's chromium driven by
// playwright-core. Two people (plus a bystander) join one room; a message typed by
// one appears on every page; a direct message appears only on its target's page
// (and, marked, on the sender's); closing the room shows the notice on every page.
//
// Usage: node chat.test.mjs SERVER_EXECUTABLE [SCREENSHOT.png]
// Exit codes: 0 passed, 1 failed, 77 skipped (no chromium / playwright-core).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const [serverExe, screenshot] = process.argv.slice(2);
if (!serverExe) {
  console.error('usage: node chat.test.mjs SERVER_EXECUTABLE [SCREENSHOT.png]');
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.log(`SKIP: ${CHROMIUM} not installed (apt-get install chromium)`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  console.log('SKIP: playwright-core not installed (npm install in tests/browser)');
  process.exit(77);
}

// The whole test is bounded in time, whatever hangs.
const deadline = setTimeout(() => {
  console.error('FAIL: timed out');
  cleanup().finally(() => process.exit(1));
}, 150_000);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

let server = null;
let context = null;
let profile = null;
let serverLog = '';

// Closes the browser and stops the server; returns the server's exit code (0 after
// SIGTERM is a clean shutdown).
async function cleanup() {
  if (context) await context.close().catch(() => {});
  context = null;
  let code = null;
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', (c) => r(c)));
    server.kill('SIGTERM');
    code = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 10_000))]);
    if (code === null) server.kill('SIGKILL');
  }
  if (profile) rmSync(profile, { recursive: true, force: true });
  profile = null;
  return code;
}

async function startServer() {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    server = spawn(serverExe, ['--host', '127.0.0.1', '--port', String(port)],
                   { stdio: ['ignore', 'ignore', 'pipe'] });
    server.stderr.on('data', (d) => { serverLog += d; });
    for (let i = 0; i < 100 && server.exitCode === null; i++) {
      if (await canConnect(port)) return port;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  throw new Error('the chat server did not start:\n' + serverLog);
}

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  console.log('ok - ' + what);
}

const logText = (page) => page.locator('#chat-log').innerText();

async function main() {
  const port = await startServer();
  const base = `http://127.0.0.1:${port}`;
  profile = mkdtempSync(path.join(os.tmpdir(), 'cch-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1000, height: 640 },
  });
  context.setDefaultTimeout(15_000);
  for (const p of context.pages()) await p.close();
  const room = 'browsertest';

  // alice picks the room and her name on the index page.
  const alice = await context.newPage();
  alice.on('dialog', (d) => d.accept());
  await alice.goto(base + '/index.html');
  await alice.fill('#room-name-input', room);
  await alice.fill('#user-name-input', 'alice');
  await alice.click('#room-name-submit');
  await alice.waitForURL(/room\.html/);
  await alice.locator('#me').filter({ hasText: 'alice' }).waitFor();
  check(true, 'alice entered the room from the index page');

  // bob and carol open the room page directly.
  const bob = await context.newPage();
  await bob.goto(`${base}/room.html?room=${room}&name=bob`);
  const carol = await context.newPage();
  await carol.goto(`${base}/room.html?room=${room}&name=carol`);
  for (const [page, who] of [[alice, 'alice'], [bob, 'bob'], [carol, 'carol']]) {
    await page.locator('#member-count').filter({ hasText: /^3$/ }).waitFor();
    const names = await page.locator('#member-list button.member').evaluateAll(
      (bs) => bs.map((b) => b.dataset.name));
    check(JSON.stringify(names) === '["alice","bob","carol"]', `${who} sees the member list`);
  }
  check(await alice.locator('#close-room').isVisible(), 'the creator sees the close button');
  check(!(await bob.locator('#close-room').isVisible()), 'others do not');
  await alice.locator('#chat-log .entry.join', { hasText: 'carol joined' }).waitFor();
  check(true, 'alice sees the join notices');

  // A message typed by alice appears on every page.
  await alice.fill('#chat-message-input', 'hello from alice');
  await alice.press('#chat-message-input', 'Enter');
  for (const [page, who] of [[alice, 'alice'], [bob, 'bob'], [carol, 'carol']]) {
    await page.locator('#chat-log .entry.chat', { hasText: 'hello from alice' }).waitFor();
    check(true, `the message appears on ${who}'s page`);
  }

  // A direct message from alice to bob: on bob's page and (marked) on alice's only.
  await alice.click('#member-list button.member[data-name="bob"]');
  check(await alice.locator('#dm-bar').isVisible(), 'alice sees she is writing to bob');
  await alice.fill('#chat-message-input', 'a secret for bob');
  await alice.click('#chat-message-submit');
  await bob.locator('#chat-log .entry.dm', { hasText: 'a secret for bob' }).waitFor();
  check(true, 'the direct message appears on bob\'s page');
  await alice.locator('#chat-log .entry.dm.mine', { hasText: 'a secret for bob' }).waitFor();
  check(true, 'the sender sees it, marked as a direct message');
  // A message to everyone sent after the DM: once carol has it, she would have the DM.
  await alice.click('#dm-clear');
  await alice.fill('#chat-message-input', 'after the secret');
  await alice.press('#chat-message-input', 'Enter');
  await carol.locator('#chat-log .entry.chat', { hasText: 'after the secret' }).waitFor();
  check(!(await logText(carol)).includes('a secret for bob'), 'carol does not see the DM');

  if (screenshot) {
    await bob.screenshot({ path: screenshot });
    console.log('screenshot: ' + screenshot);
  }

  // bob cannot close the room; alice can, and every page shows it.
  await bob.evaluate(() => { document.getElementById('close-room').hidden = false; });
  bob.on('dialog', (d) => d.accept());
  await bob.click('#close-room');
  await bob.locator('#chat-log .entry.error', { hasText: 'creator' }).waitFor();
  check(true, 'only the creator may close the room');
  await alice.click('#close-room');
  for (const [page, who] of [[alice, 'alice'], [bob, 'bob'], [carol, 'carol']]) {
    const notice = page.locator('#room-closed');
    await notice.waitFor();
    check((await notice.innerText()).includes('4000 room closed'),
          `${who}'s page shows that the room was closed`);
    check(await page.locator('#chat-message-input').isDisabled(), `${who} can no longer type`);
  }
}

let status = 0;
try {
  await main();
} catch (e) {
  console.error('FAIL: ' + (e && e.stack ? e.stack : e));
  status = 1;
}
const code = await cleanup();
if (status === 0 && (code !== 0 || /Sanitizer|runtime error:/.test(serverLog))) {
  console.error(`FAIL: the server did not shut down cleanly (exit code ${code})`);
  status = 1;
}
if (status !== 0) console.error('--- server log ---\n' + serverLog);
else console.log('PASS');
clearTimeout(deadline);
process.exit(status);
