// Drive /balancer-manager in headless Chromium as an operator would: open the page, follow the
// edit link of a member, switch its "Disabled" flag and submit. Used by tests/e2e/browser.rs.
//
//   node tests/browser/manager.mjs BASE_URL MEMBER_URL on|off SCREENSHOT_DIR
//
// Prints one line of JSON: the member's status text on the page after the change.
import { createRequire } from 'node:module';

// playwright-core is installed by tests/run under target/js-tools (JS_TOOLS).
const require = createRequire(`${process.env.JS_TOOLS}/index.js`);
const { chromium } = require('playwright-core');

const [base, member, disabled, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // This machine's network is closed: keep Chromium from reaching out at start.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  // A browser asks for /favicon.ico, which the balancer would proxy: a request the test did not
  // send would shift the members' order it checks.
  await page.route('**/favicon.ico', (route) => route.abort());
  await page.goto(`${base}/balancer-manager`);
  await page.screenshot({ path: `${shots}/manager-before-${disabled}.png`, fullPage: true });
  // The member's edit link: its URL is the link text in the member table.
  await Promise.all([page.waitForLoadState('load'), page.getByRole('link', { name: member, exact: true }).click()]);
  await page.waitForSelector("input[name='w_status_D']");
  await page.check(disabled === 'on' ? '#w_status_D_1' : '#w_status_D_0');
  await Promise.all([page.waitForNavigation(), page.click("input[type=submit][value='Submit']")]);
  await page.screenshot({ path: `${shots}/manager-after-${disabled}.png`, fullPage: true });
  const row = page.locator('tr', { has: page.getByRole('link', { name: member, exact: true }) }).first();
  const status = (await row.locator('td').nth(5).textContent()) ?? '';
  console.log(JSON.stringify({ status }));
} finally {
  await browser.close();
}
