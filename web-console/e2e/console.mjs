// The console's browser test: a real Chromium (Debian's, through playwright-core; never a
// browser download) signs in at the identity provider, adds an SSH key, creates an instance from
// the form, types on its serial console, stops and deletes it.
//
//   CONSOLE_URL=http://127.0.0.1:8080 OIDC_USER=alice SSH_PUBLIC_KEY="$(cat key.pub)" \
//   IMAGE=minimal INSTANCE_NAME=web-e2e SCREENSHOT_DIR=/tmp/shots node e2e/console.mjs
//
// Environment: CONSOLE_URL (the control plane), OIDC_USER (a user of the test provider, any
// password), SSH_PUBLIC_KEY (a key line), IMAGE (image name), INSTANCE_NAME, SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium), PROJECT (optional: the project to select; default the
// first one the user belongs to), SSH_KEY_NAME (default e2e-key), SCENARIO (a name of
// SCENARIOS; default `customer`, every step below).
//
// Each step is a function taking a Scenario ({config, browser, context, page, project}),
// exported for the harness to compose other runs: add one to SCENARIOS, or import this module
// and call `run(async (s) => { await signIn(s); … })`. On any failure: failure.png, the page URL, the error,
// exit 1. The whole run is bounded by 4 minutes.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const OVERALL_TIMEOUT_MS = 4 * 60 * 1000;

/** Prints one step with a timestamp. */
export function log(message) {
  console.log(`${new Date().toISOString()} ${message}`);
}

function required(env, name) {
  const value = env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

/** The inputs of a run, from the environment. */
export function configFromEnv(env = process.env) {
  return {
    consoleUrl: required(env, 'CONSOLE_URL').replace(/\/+$/, ''),
    oidcUser: required(env, 'OIDC_USER'),
    sshPublicKey: required(env, 'SSH_PUBLIC_KEY').trim(),
    sshKeyName: env.SSH_KEY_NAME || 'e2e-key',
    image: required(env, 'IMAGE'),
    instanceName: required(env, 'INSTANCE_NAME'),
    screenshotDir: required(env, 'SCREENSHOT_DIR'),
    project: env.PROJECT || null,
    chromium: env.CHROMIUM || '/usr/bin/chromium',
  };
}

/** A browser and a page, 1280×800. Close with `closeScenario`. */
export async function openScenario(config) {
  mkdirSync(config.screenshotDir, { recursive: true });
  const browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (err) => log(`page error: ${err.message}`));
  return { config, browser, context, page, project: null };
}

export async function closeScenario(s) {
  await s.browser.close();
}

/** A screenshot in SCREENSHOT_DIR. */
export async function screenshot(s, name) {
  const path = join(s.config.screenshotDir, name);
  await s.page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

/** Step 1: the sign-in page, the provider's login and consent, back in the console. */
export async function signIn(s) {
  const { page, config } = s;
  log(`open ${config.consoleUrl}`);
  await page.goto(config.consoleUrl);
  const button = page.getByRole('link', { name: /^Sign in with (?!an API token)/ });
  await button.waitFor();
  await screenshot(s, 'signin.png');
  log(`click "${(await button.textContent()).trim()}"`);
  await button.click();
  await page.locator('input[name="login"]').waitFor();
  log(`provider login as ${config.oidcUser}`);
  await page.locator('input[name="login"]').fill(config.oidcUser);
  await page.locator('input[name="password"]').fill('any-password');
  await page.locator('button[type="submit"]').click();
  // Consent (first sign-in of this user at this client), then back to the console.
  const consoleOrigin = new URL(config.consoleUrl).origin;
  const deadline = Date.now() + 30_000;
  while (new URL(page.url()).origin !== consoleOrigin) {
    if (Date.now() > deadline) throw new Error(`still at ${page.url()} after the provider's login`);
    const cont = page.getByRole('button', { name: 'Continue' });
    if (await cont.isVisible().catch(() => false)) {
      log('provider consent: Continue');
      await cont.click();
    }
    await page.waitForTimeout(200);
  }
  await page.locator('.user-button .avatar').waitFor();
  log(`signed in, at ${page.url()}`);
}

/** Step 2a: select the project (PROJECT, else the first of the switcher). */
export async function selectProject(s) {
  const { page, config } = s;
  const switcher = page.getByLabel('Project', { exact: true });
  await switcher.waitFor();
  const options = await switcher.locator('option').evaluateAll((os) => os.map((o) => o.value).filter((v) => v !== ''));
  if (options.length === 0) throw new Error('the user belongs to no project');
  const project = config.project ?? options[0];
  if (!options.includes(project)) throw new Error(`no project ${project} in the switcher (${options.join(', ')})`);
  await switcher.selectOption(project);
  await page.waitForURL(new RegExp(`/projects/${encodeURIComponent(project)}/`));
  s.project = project;
  log(`project ${project}`);
}

function projectUrl(s, rest) {
  return `${s.config.consoleUrl}/projects/${encodeURIComponent(s.project)}/${rest}`;
}

/** Step 2b: add the SSH key on the SSH keys page. */
export async function addSshKey(s) {
  const { page, config } = s;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'SSH keys' }).click();
  await page.waitForURL(/\/ssh-keys$/);
  const form = page.getByRole('form', { name: 'Add SSH key' });
  await form.getByLabel('Name').fill(config.sshKeyName);
  await form.getByLabel('Public key').fill(config.sshPublicKey);
  await form.getByRole('button', { name: 'Add SSH key' }).click();
  await page.getByRole('table', { name: 'SSH keys' }).getByRole('cell', { name: config.sshKeyName, exact: true }).waitFor();
  log(`SSH key ${config.sshKeyName} added`);
  await screenshot(s, 'ssh-keys.png');
}

/** Step 3: the create form (1 vCPU, 256 MiB, the key), then the instance page until `running`. */
export async function createInstance(s) {
  const { page, config } = s;
  await page.goto(projectUrl(s, 'instances/new'));
  const form = page.getByRole('form', { name: 'Create instance' });
  await form.getByLabel('Name').fill(config.instanceName);
  const image = form.getByLabel('Image');
  await image.waitFor();
  const images = await image.locator('option').evaluateAll((os) => os.map((o) => o.value));
  if (!images.includes(config.image)) throw new Error(`no image ${config.image} in the form (${images.join(', ') || 'none'})`);
  await image.selectOption(config.image);
  await form.getByLabel('vCPUs').fill('1');
  await form.getByLabel('Memory (MiB)').fill('256');
  await form.getByRole('checkbox', { name: new RegExp(`^${config.sshKeyName}\\b`) }).check();
  const command = await page.getByTestId('cloudctl-command').textContent();
  log(`cloudctl command: ${command.replace(/\s+/g, ' ')}`);
  if (!command.includes(`instance create ${config.instanceName}`) || !command.includes('--memory 256MiB')) {
    throw new Error(`the cloudctl command does not follow the form: ${command}`);
  }
  await screenshot(s, 'create.png');
  await form.getByRole('button', { name: 'Create instance' }).click();
  await page.waitForURL(new RegExp(`/instances/${config.instanceName}$`));
  log(`created; waiting for running at ${page.url()}`);
  await waitForState(s, 'running', 180_000);
  await screenshot(s, 'instance.png');
}

/** Waits until the instance page's header shows `state` (or fails at failed/lost). */
export async function waitForState(s, state, timeoutMs) {
  const { page } = s;
  const badge = page.locator('.page-header h1 .badge');
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const text = ((await badge.textContent({ timeout: 5000 }).catch(() => '')) ?? '').trim();
    if (text !== last) {
      log(`instance state: ${text || '(loading)'}`);
      last = text;
    }
    if (text === state) return;
    if ((text === 'failed' || text === 'lost') && state !== text) {
      const reason = await page
        .locator('.page-sub')
        .textContent()
        .catch(() => '');
      throw new Error(`instance is ${text}: ${reason}`);
    }
    if (Date.now() > deadline) throw new Error(`instance not ${state} after ${timeoutMs / 1000}s (is ${text})`);
    await page.waitForTimeout(500);
  }
}

/** The serial console's text, from the terminal's buffer (window.__term). */
async function terminalText(page) {
  return page.evaluate(() => {
    const term = window.__term;
    if (!term) return '';
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  });
}

async function waitForTerminal(page, pattern, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await terminalText(page);
    if (pattern.test(text)) return text;
    if (Date.now() > deadline) {
      throw new Error(
        `no ${what} on the serial console after ${timeoutMs / 1000}s; it shows:\n${text.trimEnd().split('\n').slice(-15).join('\n')}`,
      );
    }
    await page.waitForTimeout(500);
  }
}

/** Step 4: the serial console shows boot output, and runs what is typed. */
export async function useSerialConsole(s) {
  const { page } = s;
  await page.getByRole('link', { name: 'Serial console' }).click();
  await page.waitForURL(/\/console$/);
  await page.getByTestId('console-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 30_000 });
  log('console connected');
  await waitForTerminal(page, /Linux version|login:|[#$] ?$/m, 60_000, 'boot output');
  log('boot output seen');
  await page.locator('.xterm').click();
  // An Enter first brings a prompt back on a quiet console; then the command. Only a shell that
  // ran it prints con42sole (the typed line itself shows con$((6*7))sole).
  await page.keyboard.press('Enter');
  await page.keyboard.type('echo con$((6*7))sole');
  await page.keyboard.press('Enter');
  try {
    await waitForTerminal(page, /con42sole/, 30_000, 'output of the typed command');
  } catch {
    // A console that was busy printing (or asked for a login) may have eaten the first line.
    log('no con42sole yet; typing the command again');
    await page.keyboard.type('echo con$((6*7))sole');
    await page.keyboard.press('Enter');
    await waitForTerminal(page, /con42sole/, 30_000, 'output of the typed command');
  }
  log('the typed command ran: con42sole');
  await screenshot(s, 'serial-console.png');
}

/** Opens the instance's page. */
export async function openInstance(s) {
  await s.page.goto(projectUrl(s, `instances/${encodeURIComponent(s.config.instanceName)}`));
  await s.page.locator('.page-header h1 .badge').waitFor();
}

async function confirm(s, action) {
  const { page } = s;
  await page.locator('.page-header').getByRole('button', { name: action, exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: action, exact: true }).click();
  await dialog.waitFor({ state: 'detached' });
  log(`${action} confirmed`);
}

/** Step 5a: stop (confirmed) until `stopped`. */
export async function stopInstance(s) {
  await openInstance(s);
  await confirm(s, 'Stop');
  await waitForState(s, 'stopped', 120_000);
}

/** Step 5b: delete (confirmed), until the instance is gone from the list. */
export async function deleteInstance(s) {
  const { page, config } = s;
  await openInstance(s);
  await confirm(s, 'Delete');
  await page.waitForURL(/\/instances$/);
  // The list, loaded (a table, or the empty state), without the instance's row.
  const loaded = page.locator('table[aria-label="Instances"], .state-empty');
  const row = page.locator(`tr[data-instance="${config.instanceName}"]`);
  const deadline = Date.now() + 120_000;
  while ((await loaded.count()) === 0 || (await row.count()) > 0) {
    if (Date.now() > deadline) throw new Error(`${config.instanceName} still listed 120 s after its delete`);
    await page.waitForTimeout(500);
  }
  log(`${config.instanceName} is gone from the list`);
  await screenshot(s, 'instances.png');
}

/** The hosts page, for an operator (skipped for others: no Hosts link). */
export async function screenshotHosts(s) {
  const { page } = s;
  const link = page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' });
  if ((await link.count()) === 0) {
    log('not an operator: no hosts page');
    return;
  }
  await link.click();
  await page.getByRole('table', { name: 'Hosts' }).waitFor();
  await screenshot(s, 'hosts.png');
}

/** Every step, in order. */
export async function fullScenario(s) {
  await signIn(s);
  await selectProject(s);
  await addSshKey(s);
  await createInstance(s);
  await useSerialConsole(s);
  await stopInstance(s);
  await deleteInstance(s);
  await screenshotHosts(s);
}

/** Runs `steps` with a fresh browser; on failure failure.png, the URL and the error, exit 1. */
export async function run(steps, config = configFromEnv()) {
  let s = null;
  const timer = setTimeout(() => {
    void fail(new Error(`the browser test took longer than ${OVERALL_TIMEOUT_MS / 60000} minutes`));
  }, OVERALL_TIMEOUT_MS);
  async function fail(err) {
    clearTimeout(timer);
    console.error(`${new Date().toISOString()} FAILED at ${s?.page?.url() ?? '(no page)'}: ${err?.stack ?? err}`);
    if (s) {
      await s.page.screenshot({ path: join(config.screenshotDir, 'failure.png'), fullPage: true }).catch(() => {});
      await s.browser.close().catch(() => {});
    }
    process.exit(1);
  }
  try {
    s = await openScenario(config);
    await steps(s);
    clearTimeout(timer);
    await closeScenario(s);
    log('browser test passed');
  } catch (err) {
    await fail(err);
  }
}

/**
 * A user of another project: the switcher offers only their own projects, and FOREIGN_PROJECT's
 * pages say there is no such project (the API's 404), showing none of its resources.
 */
export async function outsiderScenario(s) {
  const { page } = s;
  const foreign = required(process.env, 'FOREIGN_PROJECT');
  await signIn(s);
  const switcher = page.getByLabel('Project', { exact: true });
  await switcher.waitFor();
  const options = await switcher.locator('option').evaluateAll((os) => os.map((o) => o.value).filter((v) => v !== ''));
  if (options.includes(foreign)) throw new Error(`the switcher offers ${foreign}: ${options.join(', ')}`);
  log(`switcher: ${options.join(', ')}`);
  for (const rest of ['instances', 'ssh-keys', 'members']) {
    await page.goto(`${s.config.consoleUrl}/projects/${encodeURIComponent(foreign)}/${rest}`);
    await page.getByText(/no such project/i).first().waitFor();
    const rows = await page.getByRole('row').count();
    if (rows > 0) throw new Error(`${rest} of ${foreign} shows ${rows} rows`);
    log(`${foreign}/${rest}: no such project`);
  }
  await screenshot(s, 'outsider.png');
}

/** A viewer of PROJECT: lists its instances, is offered no way to create or change one. */
export async function viewerScenario(s) {
  const { page } = s;
  await signIn(s);
  await selectProject(s);
  await page.goto(projectUrl(s, 'instances'));
  await page.getByRole('heading', { name: 'Instances' }).waitFor();
  await page.getByText(/No instances yet|Cannot load/).or(page.getByRole('table')).first().waitFor();
  if (await page.getByText(/Cannot load/).count()) throw new Error('a viewer cannot list the instances');
  for (const name of ['Create instance', 'Create the first one']) {
    if (await page.getByRole('link', { name }).count()) throw new Error(`a viewer is offered "${name}"`);
  }
  log('viewer: lists, cannot create');
  await screenshot(s, 'viewer.png');
}

/** The scenarios SCENARIO may name (default `customer`). */
export const SCENARIOS = {
  customer: fullScenario,
  outsider: outsiderScenario,
  viewer: viewerScenario,
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const name = process.env.SCENARIO || 'customer';
  const scenario = SCENARIOS[name];
  if (!scenario) {
    console.error(`no scenario ${name} (known: ${Object.keys(SCENARIOS).join(', ')})`);
    process.exit(2);
  }
  log(`scenario ${name}`);
  await run(scenario);
}
