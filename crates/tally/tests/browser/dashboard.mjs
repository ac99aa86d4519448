// The dashboard driven as a person would, in Debian's Chromium through playwright-core:
// sign in, read and change the usage chart, filter, sort and export users, open a user, resolve
// an alert, look at seats, check a phone's width, sign out. A screenshot per step.
// Usage: node dashboard.mjs <playwright-core entry> <base url> <admin key> <screenshot dir> <user key>

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const [playwrightEntry, base, key, shots, userKey] = process.argv.slice(2);
const { chromium } = await import(playwrightEntry);
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.TALLY_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => m.type() === 'error' && !m.text().includes('status of 4') && problems.push(`console: ${m.text()}`));
const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
const step = async (name, fn) => {
  try {
    await fn();
  } catch (e) {
    await shot(`failed-${name}`).catch(() => {});
    throw new Error(`step "${name}" failed: ${e.message}`);
  }
};
const download = async (trigger) => {
  const [file] = await Promise.all([page.waitForEvent('download'), trigger()]);
  return fs.readFileSync(await file.path(), 'utf8');
};
const csvRows = (text) => text.trim().split('\n');

await step('sign in', async () => {
  await page.goto(base);
  await page.getByLabel('API key').waitFor();
  await shot('01-sign-in');
  await page.getByLabel('API key').fill('tly_not_a_real_key');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That key is unknown or revoked.').waitFor();
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Pages' }).waitFor();
});

await step('usage chart', async () => {
  await page.locator('svg.chart').waitFor();
  assert.ok((await page.locator('svg.chart circle').count()) > 10, 'points on the chart');
  const days = await page.locator('svg.chart .series-0 circle').count();
  await page.getByLabel('Interval').selectOption('week');
  await page.waitForFunction((d) => {
    const n = document.querySelectorAll('svg.chart .series-0 circle').length;
    return n > 0 && n !== d;
  }, days);
  const weeks = await page.locator('svg.chart .series-0 circle').count();
  assert.ok(weeks < days && weeks >= 4, `weekly points (${weeks}) fewer than daily (${days})`);
  await page.getByLabel('Breakdown').selectOption('team');
  await page.waitForFunction(() => document.querySelectorAll('svg.chart g.series').length >= 2);
  const teams = await page.locator('.legend li').allTextContents();
  assert.ok(teams.some((t) => t.includes('field-ops')), `team legend: ${teams}`);
  await page.getByLabel('View').selectOption('area');
  await page.locator('svg.chart path[fill-opacity]').first().waitFor();
  await page.getByLabel('Compare with previous period').check();
  await page.waitForFunction(() => [...document.querySelectorAll('.legend li')].some((l) => l.textContent.includes('(previous)')));
  await page.getByLabel('Compare with previous period').uncheck();
  await page.waitForFunction(() => ![...document.querySelectorAll('.legend li')].some((l) => l.textContent.includes('(previous)')));
  await page.getByLabel('View').selectOption('bar');
  await page.locator('svg.chart rect').first().waitFor();
  await shot('02-usage');
  const csv = await download(() => page.getByRole('button', { name: 'Download CSV' }).click());
  const rows = csvRows(csv);
  const series = await page.locator('svg.chart g.series').count();
  assert.equal(rows[0], 'series,date,value');
  assert.equal(rows.length - 1, series * weeks, 'one CSV row per series and week shown');
  await page.getByLabel('View').selectOption('table');
  await page.getByRole('table').waitFor();
  await page.getByLabel('Show spend (money)').check();
  await page.getByRole('table').getByText('$').first().waitFor();
  await shot('03-usage-spend-table');
});

await step('users', async () => {
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await page.locator('#user-count').waitFor();
  const all = Number((await page.locator('#user-count').textContent()).replace(/\D/g, ''));
  assert.ok(all > 30, `users listed: ${all}`);
  assert.ok((await page.locator('.balance').count()) > 0, 'balance bars');
  await page.getByLabel('Filter (q)').fill('organization__id:acme');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForFunction((n) => Number(document.querySelector('#user-count')?.textContent.replace(/\D/g, '')) !== n, all);
  const acme = Number((await page.locator('#user-count').textContent()).replace(/\D/g, ''));
  assert.ok(acme > 0 && acme < all, `acme users: ${acme}`);
  const names = async () => page.locator('tbody tr td:first-child a').allTextContents();
  const before = await names();
  await page.getByRole('button', { name: 'User' }).click();
  await page.waitForFunction((b) => [...document.querySelectorAll('tbody tr td:first-child a')].map((t) => t.textContent).join() !== b.join(), before);
  const sorted = await names();
  assert.deepEqual(sorted, [...sorted].sort(), 'sorted by username');
  assert.match(page.url(), /ordering=username/);
  const exported = await download(() => page.getByRole('link', { name: /Export all/ }).click());
  assert.equal(csvRows(exported).length, acme + 1, 'every matching user, plus a header');
  await shot('04-users');
  await page.getByLabel('Filter (q)').fill('organization__id:acme AND (username:x');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#q-error mark').waitFor();
  assert.equal(await page.getByLabel('Filter (q)').getAttribute('aria-invalid'), 'true');
  assert.match(await page.locator("#q-error").textContent(), /position 37/);
  await shot('05-users-bad-q');
  await page.getByLabel('Filter (q)').fill('organization__id:acme');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('tbody tr').first().waitFor();
});

await step('user page', async () => {
  await page.locator('tbody tr td:first-child a').first().click();
  await page.getByText('LLM requests', { exact: true }).first().waitFor();
  await page.locator('.stat-value').nth(2).waitFor();
  await page.locator('svg.chart').first().waitFor();
  await page.locator('section', { hasText: 'Churn score' }).locator('svg.chart, .state.empty').first().waitFor();
  const history = page.locator('section', { has: page.locator('#hist') });
  await history.locator('tbody tr').first().waitFor();
  const first = await history.locator('tbody tr').first().textContent();
  await history.getByRole('button', { name: 'Older' }).click();
  await page.waitForFunction((f) => document.querySelector('section:has(#hist) tbody tr')?.textContent !== f, first);
  await shot('06-user');
});

await step('churn and alerts', async () => {
  await page.getByRole('link', { name: 'Churn & alerts' }).click();
  await page.locator('section:has(#dist) svg.chart').waitFor();
  // Another day's report: the chart says which day it shows.
  const latest = await page.getByLabel('Report day').inputValue();
  const earlier = new Date(Date.parse(latest) - 2 * 86400000).toISOString().slice(0, 10);
  await page.getByLabel('Report day').fill(earlier);
  await page.getByLabel('Report day').dispatchEvent('change');
  await page.waitForFunction((d) => document.querySelector('section:has(#dist) svg.chart')?.getAttribute('aria-label')?.endsWith(d), earlier);
  const open = page.locator('section', { has: page.locator('#alerts') });
  await open.getByRole('button', { name: 'Resolve…' }).first().waitFor();
  const count = async () => Number((await open.locator('.summary').textContent()).replace(/\D/g, ''));
  const before = await count();
  await open.getByRole('button', { name: 'Resolve…' }).first().click();
  await page.getByLabel('What did you do?').fill('Called the customer; renewal agreed.');
  await shot('07-resolve');
  await page.getByRole('dialog').getByRole('button', { name: 'Resolve' }).click();
  await page.waitForFunction((b) => Number(document.querySelector('section:has(#alerts) .summary')?.textContent.replace(/\D/g, '')) === b - 1, before);
  await shot('08-churn');
});

await step('seats', async () => {
  await page.getByRole('link', { name: 'Seats' }).click();
  await page.locator('section:has(#seatsc) svg.chart').waitFor();
  await page.getByText('Next invoice').waitFor();
  await shot('09-seats');
});

await step('phone width', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole('link', { name: 'Usage', exact: true }).click();
  await page.locator('.result svg.chart, .result table').first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow}px at a phone's width`);
  await shot('10-usage-phone');
  await page.setViewportSize({ width: 1366, height: 900 });
});

await step('keyboard', async () => {
  await page.getByRole('link', { name: 'Usage', exact: true }).focus();
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  assert.equal(focused, 'Users', 'Tab moves through the navigation');
  await page.keyboard.press('Enter');
  await page.locator('#user-count').waitFor();
});

await step('sign out', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API key').waitFor();
  await page.reload();
  await page.getByLabel('API key').waitFor();
  const cookies = await context.cookies();
  assert.ok(!cookies.some((c) => c.name === 'tally_session' && c.value), 'the session cookie is gone');
  await shot('11-signed-out');
});

await step('a user key sees its own usage', async () => {
  await page.getByLabel('API key').fill(userKey);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('.result svg.chart, .result .state.empty').first().waitFor();
  assert.equal(await page.getByRole('link', { name: 'Users', exact: true }).isVisible(), false, 'no user reports for a user key');
  assert.equal(await page.getByLabel('Organization').count(), 0, 'no organization picker');
  await shot('12-user-key-usage');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API key').waitFor();
});

await browser.close();
assert.deepEqual(problems, [], 'no script errors');
console.log(`dashboard ok; screenshots in ${shots}`);
