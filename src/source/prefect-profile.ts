/**
 * The active Prefect profile: the settings `prefect config set` and `prefect cloud login` write to
 * `profiles.toml`, found and chosen as Prefect finds and chooses it. They apply below the variables,
 * flags and options, as in Prefect, where a variable outranks the profile.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { parse, TomlError } from 'smol-toml';

export interface PrefectProfile {
  readonly name: string;
  readonly path: string;
  /** The profile's settings by their variable names, as TOML gave them (text, a number, true or false…). */
  readonly values: Readonly<Record<string, unknown>>;
}

type Env = Readonly<Record<string, string | undefined>>;

const given = (env: Env, name: string): string | undefined => {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
};

/** `~/x` as the user's home directory (`HOME`) joined with `x`, as Prefect expands its paths. */
function expandHome(path: string, env: Env): string | undefined {
  if (path !== '~' && !path.startsWith('~/')) return path;
  const home = given(env, 'HOME');
  return home === undefined ? undefined : join(home, path.slice(1));
}

/**
 * Where Prefect reads its profiles: PREFECT_PROFILES_PATH, else `profiles.toml` in PREFECT_HOME,
 * else in `~/.prefect`. Undefined when the environment names no home (a host's `env` option
 * without `HOME`): no profile is read.
 */
export function profilesPath(env: Env): string | undefined {
  const file = given(env, 'PREFECT_PROFILES_PATH');
  if (file !== undefined) return expandHome(file, env);
  const prefectHome = given(env, 'PREFECT_HOME');
  const home = prefectHome === undefined ? expandHome('~/.prefect', env) : expandHome(prefectHome, env);
  return home === undefined ? undefined : join(home, 'profiles.toml');
}

const isTable = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);

/**
 * The profile `selected` names (PREFECT_PROFILE, `--profile`), else the file's `active` one. A file
 * that is missing gives none, silently unless a profile was asked for by name; one that cannot be read
 * or is not TOML, or names a profile it does not have, gives none with a warning (its text is never
 * quoted: it holds API keys).
 */
export function readPrefectProfile(env: Env, selected: string | undefined, selectedBy: string, warnings: string[]): PrefectProfile | undefined {
  const path = profilesPath(env);
  if (path === undefined) return undefined;
  const shown = isAbsolute(path) ? path : `${path} (in ${process.cwd()})`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      if (selected !== undefined) warnings.push(`${selectedBy} is ${JSON.stringify(selected)}, but there is no Prefect profiles file at ${shown}: no profile is used`);
      return undefined;
    }
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (code ?? 'unreadable');
    warnings.push(`cannot read the Prefect profiles file ${shown}: ${why}; no profile is used`);
    return undefined;
  }
  let data: Record<string, unknown>;
  try {
    data = parse(text);
  } catch (err) {
    const at = err instanceof TomlError ? ` (line ${err.line}, column ${err.column})` : '';
    warnings.push(`the Prefect profiles file ${shown} is not valid TOML${at}: no profile is used`);
    return undefined;
  }
  const profiles = isTable(data.profiles) ? data.profiles : {};
  const active = typeof data.active === 'string' && data.active.trim() !== '' ? data.active : undefined;
  const name = selected ?? active;
  if (name === undefined) return undefined;
  const profile = profiles[name];
  if (!isTable(profile)) {
    const names = Object.keys(profiles).filter((n) => isTable(profiles[n]));
    const known = names.length === 0 ? 'it has none' : `it has ${names.map((n) => JSON.stringify(n)).join(', ')}`;
    const by = selected !== undefined ? selectedBy : '`active`';
    warnings.push(`${by} is ${JSON.stringify(name)}, which is no profile in ${shown} (${known}): no profile is used`);
    return undefined;
  }
  return { name, path: shown, values: profile };
}
