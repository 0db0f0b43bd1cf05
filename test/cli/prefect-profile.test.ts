/**
 * A Prefect user's server and key live in their Prefect profile (`prefect cloud login`,
 * `prefect config set PREFECT_API_URL=…` write `~/.prefect/profiles.toml`): prefect-otel reads the
 * active profile as Prefect does, below the variables, flags and options, and says where a value
 * it could not use came from, never the file's text.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { startCli } from '../helpers/cli.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { assertOneSpanPerRun, logLines, startWatch, tempDir, until, workload } from '../helpers/watch-e2e.js';

const KEY = 'pnu_Profile0123456789abcdefghij';
const ACCOUNT = '0ff44498-d380-4d7b-bd68-9b52da03823f';
const WORKSPACE = 'c5d6f8d3-4b0e-4d5a-9e2b-1b8e8b3f1a2c';
const CLOUD = `https://api.prefect.cloud/api/accounts/${ACCOUNT}/workspaces/${WORKSPACE}`;

/** A home directory whose `.prefect/profiles.toml` holds `toml`. */
function homeWith(toml: string): string {
  const home = tempDir();
  mkdirSync(join(home, '.prefect'));
  writeFileSync(join(home, '.prefect', 'profiles.toml'), toml);
  return home;
}

const PROFILES = `active = "cloud"

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"
PREFECT_API_TLS_INSECURE_SKIP_VERIFY = true
PREFECT_API_REQUEST_TIMEOUT = 12.5

[profiles.cloud]
PREFECT_API_URL = "${CLOUD}"
PREFECT_API_KEY = "${KEY}"
PREFECT_OTEL_LOG_LEVEL = "trace"
`;

test('the active Prefect profile gives PREFECT_API_URL and PREFECT_API_KEY where no variable, flag or option does; PREFECT_PROFILE or the option picks another; prefect-otel\'s own settings are never read from it', () => {
  const home = homeWith(PROFILES);
  const file = join(home, '.prefect', 'profiles.toml');
  const pick = (options: Parameters<typeof resolveConfig>[0], env: Record<string, string>) => {
    const c = resolveConfig(options, env);
    return { apiUrl: c.prefect.apiUrl, apiKey: c.prefect.apiKey, uiUrl: c.prefect.uiUrl, insecure: !c.prefect.tls.rejectUnauthorized, timeoutMs: c.prefect.requestTimeoutMs, logLevel: c.log.level, profile: c.prefect.profile, sources: c.sources, warnings: c.warnings };
  };
  const cloud = { name: 'cloud', path: file };
  const from = (name: string, profile = 'cloud') => `${name} in Prefect profile "${profile}" (${file})`;

  assert.deepEqual(pick({}, { HOME: home }), {
    apiUrl: CLOUD, apiKey: KEY, uiUrl: `https://app.prefect.cloud/account/${ACCOUNT}/workspace/${WORKSPACE}`, insecure: false, timeoutMs: 60_000, logLevel: 'info',
    profile: cloud, sources: { apiUrl: from('PREFECT_API_URL'), apiKey: from('PREFECT_API_KEY') }, warnings: [],
  });
  // A variable outranks the profile, an option (a flag) outranks both; the key still comes from the profile.
  assert.deepEqual(pick({}, { HOME: home, PREFECT_API_URL: `${CLOUD}/` }).sources, { apiUrl: 'PREFECT_API_URL', apiKey: from('PREFECT_API_KEY') });
  assert.deepEqual(pick({ apiKey: 'pnu_other' }, { HOME: home, PREFECT_API_KEY: 'pnu_env' }).apiKey, 'pnu_other');
  // The other profile by PREFECT_PROFILE (or the option): TOML's true and 12.5 as Prefect reads them.
  const local = { apiUrl: 'http://127.0.0.1:4200/api', apiKey: undefined, uiUrl: undefined, insecure: true, timeoutMs: 12_500, logLevel: 'info', profile: { name: 'local', path: file } };
  const localSources = { prefectProfile: 'PREFECT_PROFILE', apiUrl: from('PREFECT_API_URL', 'local'), apiTlsInsecureSkipVerify: from('PREFECT_API_TLS_INSECURE_SKIP_VERIFY', 'local'), apiRequestTimeout: from('PREFECT_API_REQUEST_TIMEOUT', 'local') };
  const warnings = [`${from('PREFECT_API_TLS_INSECURE_SKIP_VERIFY', 'local')} is on: the Prefect server's certificate is not checked`];
  assert.deepEqual(pick({}, { HOME: home, PREFECT_PROFILE: 'local' }), { ...local, sources: localSources, warnings });
  assert.deepEqual(pick({ prefectProfile: 'local' }, { HOME: home, PREFECT_PROFILE: 'cloud' }).sources, { ...localSources, prefectProfile: 'option prefectProfile' });
  // Found through PREFECT_HOME, or PREFECT_PROFILES_PATH (`~` is the home directory), as Prefect finds it.
  assert.deepEqual(pick({}, { PREFECT_HOME: join(home, '.prefect') }).profile, cloud);
  assert.deepEqual(pick({}, { HOME: home, PREFECT_PROFILES_PATH: '~/.prefect/profiles.toml', PREFECT_HOME: '/nowhere' }).profile, cloud);
  // No home named (a host's own `env` option), or the caller does not read profiles (the demo): none.
  assert.deepEqual(pick({}, {}).profile, undefined);
  assert.equal(resolveConfig({}, { HOME: home }, undefined, [], false).prefect.apiUrl, 'http://127.0.0.1:4200/api');
});

test('a Prefect profile that cannot be used is a warning naming the file and why, never quoting it; a value in it that is wrong is a configuration error naming the profile', () => {
  const warningsOf = (toml: string | undefined, env: Record<string, string> = {}): readonly string[] => {
    const home = toml === undefined ? tempDir() : homeWith(toml);
    return resolveConfig({}, { HOME: home, ...env }).warnings.map((w) => w.replace(home, '~'));
  };
  assert.deepEqual(warningsOf(`active = "cloud"\n[profiles.cloud]\nPREFECT_API_KEY = "${KEY}\n`), ['the Prefect profiles file ~/.prefect/profiles.toml is not valid TOML (line 3, column 51): no profile is used']);
  assert.deepEqual(warningsOf('active = "clod"\n[profiles.cloud]\n[profiles.local]\n'), ['`active` is "clod", which is no profile in ~/.prefect/profiles.toml (it has "cloud", "local"): no profile is used']);
  assert.deepEqual(warningsOf(PROFILES, { PREFECT_PROFILE: 'prod' }), ['PREFECT_PROFILE is "prod", which is no profile in ~/.prefect/profiles.toml (it has "local", "cloud"): no profile is used']);
  assert.deepEqual(warningsOf(undefined, { PREFECT_PROFILE: 'prod' }), ['PREFECT_PROFILE is "prod", but there is no Prefect profiles file at ~/.prefect/profiles.toml: no profile is used']);
  // No file and no profile asked for: Prefect's own defaults, silently.
  assert.deepEqual(warningsOf(undefined), []);
  assert.deepEqual(warningsOf('[profiles.cloud]\nPREFECT_API_URL = "http://127.0.0.1:1/api"\n'), []);
  if (process.getuid?.() !== 0) {
    const home = homeWith(PROFILES);
    chmodSync(join(home, '.prefect', 'profiles.toml'), 0o000);
    assert.deepEqual(resolveConfig({}, { HOME: home }).warnings, [`cannot read the Prefect profiles file ${join(home, '.prefect', 'profiles.toml')}: permission denied; no profile is used`]);
  }

  const home = homeWith(`active = "cloud"\n[profiles.cloud]\nPREFECT_API_URL = "https://app.prefect.cloud/account/${ACCOUNT}/workspace/${WORKSPACE}"\nPREFECT_API_REQUEST_TIMEOUT = "soon"\n`);
  const file = join(home, '.prefect', 'profiles.toml');
  assert.throws(
    () => resolveConfig({}, { HOME: home }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        `PREFECT_API_URL in Prefect profile "cloud" (${file}): app.prefect.cloud is the Prefect Cloud web UI, not its API: use https://api.prefect.cloud/api/accounts/${ACCOUNT}/workspaces/${WORKSPACE}`,
        `PREFECT_API_REQUEST_TIMEOUT in Prefect profile "cloud" (${file}): expected a number of seconds, got "soon"`,
      ]);
      return true;
    },
  );
});

test('watch with no PREFECT_API_URL: the server and the auth string of the active Prefect profile, spans exported, the profile in the startup line and in the advice when the server refuses it, the secret in neither', async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:ProfilePass1' });
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const w = workload(1);
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const toml = (auth: string) => `active = "local"\n\n[profiles.local]\nPREFECT_API_URL = "${prefect.url}"\nPREFECT_API_AUTH_STRING = "${auth}"\n`;
  const home = homeWith(toml('admin:ProfilePass1'));
  const file = join(home, '.prefect', 'profiles.toml');

  const run = startWatch({ HOME: home, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  await until('subscription', () => prefect.connections.some((c) => c.live));
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  assertOneSpanPerRun(receiver.spans(), w);
  assert.deepEqual(prefect.upgrades.map((u) => u.headers.authorization), [`Basic ${Buffer.from('admin:ProfilePass1').toString('base64')}`]);
  const settings = logLines(r.stdout).find((l) => l.msg === 'prefect-otel starting')?.settings as Record<string, unknown>;
  assert.deepEqual({ apiUrl: settings.apiUrl, auth: settings.auth, prefectProfile: settings.prefectProfile }, { apiUrl: prefect.url, auth: 'auth-string', prefectProfile: { name: 'local', path: file } });
  assert.ok(!`${r.stdout}${r.stderr}`.includes('ProfilePass1'));

  writeFileSync(file, toml('admin:Wrong0Pass'));
  const refused = await startCli([], { HOME: home, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') }).result;
  assert.equal(refused.code, 3, refused.stderr);
  assert.equal(
    refused.stderr,
    `prefect-otel: the Prefect event stream refused authentication (close 1008: Invalid token): check PREFECT_API_AUTH_STRING in Prefect profile "local" (${file})\n`,
  );
  assert.ok(!`${refused.stdout}${refused.stderr}`.includes('Wrong0Pass'));
});

test('the demo reads no Prefect profile: one whose URL is wrong neither stops it nor links its runs to that workspace', async () => {
  const home = homeWith(`active = "cloud"\n[profiles.cloud]\nPREFECT_API_URL = "localhost:4200"\nPREFECT_UI_URL = "https://prefect.example.com"\n`);
  const r = await startCli(['demo'], { HOME: home, COLUMNS: '200' }).result;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!`${r.stdout}${r.stderr}`.includes('prefect.example.com'));
});
