/**
 * The Compose spec lets most service fields be written in a short and a long form; these read
 * either into one shape, so the checks in deploy-files.test.ts do not depend on which one the
 * file uses. Anything malformed throws with the field's name.
 */
export type Obj = Record<string, unknown>;

export function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function asObj(value: unknown, what: string): Obj {
  if (!isObj(value)) throw new TypeError(`${what}: expected a mapping, got ${JSON.stringify(value)}`);
  return value;
}

export function asString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new TypeError(`${what}: expected a string, got ${JSON.stringify(value)}`);
  return value;
}

export function asStrings(value: unknown, what: string): string[] {
  if (!Array.isArray(value)) throw new TypeError(`${what}: expected a list, got ${JSON.stringify(value)}`);
  return value.map((v, i) => asString(v, `${what}[${i}]`));
}

export interface PortMapping {
  readonly published: number | undefined;
  readonly target: number;
}

/** `ports:` entries: `"8080"`, `"8080:80"`, `"127.0.0.1:8080:80/tcp"`, a number, or `{ target, published }`. */
export function ports(service: Obj, name: string): PortMapping[] {
  const raw = service.ports ?? [];
  if (!Array.isArray(raw)) throw new TypeError(`${name}.ports: expected a list`);
  return raw.map((entry: unknown, i): PortMapping => {
    if (typeof entry === 'number') return { published: undefined, target: entry };
    if (isObj(entry)) {
      return { published: entry.published === undefined ? undefined : Number(entry.published), target: Number(entry.target) };
    }
    const parts = asString(entry, `${name}.ports[${i}]`).replace(/\/(tcp|udp)$/, '').split(':');
    const target = Number(parts.at(-1));
    return { published: parts.length >= 2 ? Number(parts.at(-2)) : undefined, target };
  });
}

export interface Mount {
  readonly kind: 'bind' | 'volume';
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}

/** `volumes:` entries: `"./src:/dst:ro"`, `"named:/dst"`, or the long `{ type, source, target, read_only }`. */
export function mounts(service: Obj, name: string): Mount[] {
  const raw = service.volumes ?? [];
  if (!Array.isArray(raw)) throw new TypeError(`${name}.volumes: expected a list`);
  return raw.map((entry: unknown, i): Mount => {
    if (isObj(entry)) {
      return {
        kind: entry.type === 'bind' ? 'bind' : 'volume',
        source: asString(entry.source, `${name}.volumes[${i}].source`),
        target: asString(entry.target, `${name}.volumes[${i}].target`),
        readOnly: entry.read_only === true,
      };
    }
    const [source = '', target = '', mode = ''] = asString(entry, `${name}.volumes[${i}]`).split(':');
    return {
      kind: /^[./~]/.test(source) ? 'bind' : 'volume',
      source,
      target,
      readOnly: mode.split(',').includes('ro'),
    };
  });
}

/** `depends_on:` as a list (meaning `service_started`) or a map of `{ condition }`. */
export function dependsOn(service: Obj, name: string): Record<string, string> {
  const raw = service.depends_on ?? {};
  if (Array.isArray(raw)) return Object.fromEntries(asStrings(raw, `${name}.depends_on`).map((d) => [d, 'service_started']));
  return Object.fromEntries(
    Object.entries(asObj(raw, `${name}.depends_on`)).map(([dep, spec]) => [
      dep,
      asString(asObj(spec, `${name}.depends_on.${dep}`).condition ?? 'service_started', `${name}.depends_on.${dep}.condition`),
    ]),
  );
}

/** `environment:` as a map or as a list of `KEY=VALUE`. */
export function environment(service: Obj, name: string): Record<string, string> {
  const raw = service.environment ?? {};
  if (Array.isArray(raw)) {
    return Object.fromEntries(asStrings(raw, `${name}.environment`).map((kv) => {
      const eq = kv.indexOf('=');
      return eq < 0 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)];
    }));
  }
  return Object.fromEntries(Object.entries(asObj(raw, `${name}.environment`)).map(([k, v]) => [k, String(v)]));
}

/** `command:` as a list, or a string split the way Compose splits it (on whitespace, no quoting here). */
export function commandArgs(service: Obj, name: string): string[] {
  const raw = service.command ?? [];
  return typeof raw === 'string' ? raw.trim().split(/\s+/) : asStrings(raw, `${name}.command`);
}

/** The value of `--flag=value` or `--flag value` in an argument list. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  for (const [i, arg] of args.entries()) {
    if (arg.startsWith(`${flag}=`)) return arg.slice(flag.length + 1);
    if (arg === flag) return args[i + 1];
  }
  return undefined;
}
