/**
 * Prefect's `EventFilter` (src/prefect/server/events/filters.py) for the fake server: validation as
 * pydantic does it (`extra="forbid"` on every sub-filter, so unknown keys are errors), defaults
 * (`occurred.until` = now, `since` = start of today − 180 days), and matching.
 *
 * Matching follows the server's live path (`EventFilter.includes`) for occurred, event, resource,
 * any_resource, id and text. `related` has no `includes()` on the server, so it matches every live
 * event; `matches(…, { related: true })` applies it the way the backfill/REST SQL does (one related
 * row must satisfy id, role, resources_in_roles and labels together; the primary resource is excluded
 * unless a role is named). `resource.distinct` is accepted and ignored everywhere.
 */
import type { WireEvent } from './fake-prefect.js';

const DAY_US = 86_400_000_000;

/** Epoch microseconds of an ISO-8601 datetime (µs kept; `Z`, `±hh:mm`, `±hhmm` or no zone = UTC), or of a number as pydantic reads it (seconds, or ms beyond 2e10). */
export function toMicros(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? Math.round((Math.abs(v) > 2e10 ? v : v * 1000) * 1000) : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?(Z|z|[+-]\d{2}(?::?\d{2})?)?$/.exec(v.trim());
  if (m === null) return undefined;
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', zone = 'Z'] = m;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(ms) || Number(mo) > 12 || Number(d) > 31 || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return undefined;
  let offsetMin = 0;
  if (zone !== 'Z' && zone !== 'z') {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone)!;
    offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3] ?? 0));
  }
  return (ms - offsetMin * 60_000) * 1000 + Number(frac.padEnd(6, '0').slice(0, 6));
}

/** Microseconds → ISO with `Z`, six fractional digits when non-zero (Python's isoformat rule). */
export function microsToIso(us: number): string {
  const ms = Math.floor(us / 1000);
  const frac = us - Math.floor(us / 1_000_000) * 1_000_000;
  const base = new Date(ms).toISOString().slice(0, 19);
  return `${base}${frac === 0 ? '' : `.${String(frac).padStart(6, '0')}`}Z`;
}

type Labels = Record<string, string[]>;
interface NameFilter { prefix?: string[]; exclude_prefix?: string[]; name?: string[]; exclude_name?: string[] }
interface ResourceFilter { id?: string[]; id_prefix?: string[]; labels?: Labels }
interface RelatedFilter { id?: string[]; role?: string[]; resources_in_roles?: [string, string][]; labels?: Labels }
interface TextQuery { include: string[]; exclude: string[]; required: string[] }

export interface ParsedFilter {
  sinceUs: number;
  untilUs: number;
  event?: NameFilter;
  resource?: ResourceFilter;
  related: RelatedFilter[];
  anyResource: ResourceFilter[];
  ids?: string[];
  text?: TextQuery;
  order: 'ASC' | 'DESC';
}

export type FilterResult = { ok: true; filter: ParsedFilter } | { ok: false; error: string };

class Invalid extends Error {
  constructor(readonly loc: string, readonly msg: string, readonly type: string) {
    super(msg);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function object(v: unknown, loc: string, keys: readonly string[]): Record<string, unknown> {
  if (!isObject(v)) throw new Invalid(loc, 'Input should be a valid dictionary or instance of the model', 'model_type');
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw new Invalid(loc === '' ? k : `${loc}.${k}`, 'Extra inputs are not permitted', 'extra_forbidden');
  return v;
}

function strings(v: unknown, loc: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw new Invalid(loc, 'Input should be a valid list', 'list_type');
  v.forEach((s, i) => {
    if (typeof s !== 'string') throw new Invalid(`${loc}.${i}`, 'Input should be a valid string', 'string_type');
  });
  return v as string[];
}

function labels(v: unknown, loc: string): Labels | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new Invalid(loc, 'Input should be a valid dictionary', 'dict_type');
  const out: Labels = {};
  for (const [k, val] of Object.entries(v)) out[k] = typeof val === 'string' ? [val] : strings(val, `${loc}.${k}`) ?? [];
  return out;
}

function datetime(v: unknown, loc: string, fallback: number): number {
  if (v === undefined) return fallback;
  const us = toMicros(v);
  if (us === undefined) throw new Invalid(loc, 'Input should be a valid datetime', 'datetime_parsing');
  return us;
}

const UUID_RE = /^(?:urn:uuid:)?\{?([0-9a-f]{8})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{12})\}?$/i;
/** A UUID in canonical form (lowercase, dashed), or undefined. */
export function canonicalUuid(v: unknown): string | undefined {
  const m = typeof v === 'string' ? UUID_RE.exec(v) : null;
  return m === null ? undefined : m.slice(1).join('-').toLowerCase();
}

function resourceFilter(v: unknown, loc: string, keys: readonly string[]): ResourceFilter | undefined {
  if (v === undefined || v === null) return undefined;
  const o = object(v, loc, keys);
  if (o.distinct !== undefined && typeof o.distinct !== 'boolean') throw new Invalid(`${loc}.distinct`, 'Input should be a valid boolean', 'bool_type');
  return compact({ id: strings(o.id, `${loc}.id`), id_prefix: strings(o.id_prefix, `${loc}.id_prefix`), labels: labels(o.labels, `${loc}.labels`) });
}

function listOf<T>(v: unknown, loc: string, one: (x: unknown, loc: string) => T | undefined): T[] {
  if (v === undefined || v === null) return [];
  const items = Array.isArray(v) ? v.map((x, i) => one(x, `${loc}.${i}`)) : [one(v, loc)];
  return items.filter((x): x is T => x !== undefined);
}

function relatedFilter(v: unknown, loc: string): RelatedFilter | undefined {
  if (v === undefined || v === null) return undefined;
  const o = object(v, loc, ['id', 'role', 'resources_in_roles', 'labels']);
  let pairs: [string, string][] | undefined;
  if (o.resources_in_roles !== undefined && o.resources_in_roles !== null) {
    if (!Array.isArray(o.resources_in_roles)) throw new Invalid(`${loc}.resources_in_roles`, 'Input should be a valid list', 'list_type');
    pairs = o.resources_in_roles.map((p, i) => {
      if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || typeof p[1] !== 'string') throw new Invalid(`${loc}.resources_in_roles.${i}`, 'Input should be a valid tuple of two strings', 'tuple_type');
      return [p[0], p[1]];
    });
  }
  return compact({ id: strings(o.id, `${loc}.id`), role: strings(o.role, `${loc}.role`), resources_in_roles: pairs, labels: labels(o.labels, `${loc}.labels`) });
}

function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Prefect's text search syntax: terms OR'ed, `-`/`!` exclude, `+` required, "quoted phrases". */
export function parseTextQuery(query: string): TextQuery {
  const out: TextQuery = { include: [], exclude: [], required: [] };
  const re = /([-!+]?)(?:"((?:\\.|[^"\\])*)"?|([^\s"]+))/g;
  for (const m of query.matchAll(re)) {
    const term = m[2] !== undefined ? m[2].replace(/\\(["\\])/g, '$1') : (m[3] ?? '');
    if (term.trim() === '') continue;
    (m[1] === '-' || m[1] === '!' ? out.exclude : m[1] === '+' ? out.required : out.include).push(term);
  }
  return out;
}

/**
 * Validate a filter as the server's `EventFilter.model_validate` does and resolve its defaults at
 * `nowMs`. `clampMs` (the websocket's 15-minute backfill window) raises `since` to `now − clampMs`.
 */
export function parseFilter(input: unknown, nowMs: number, clampMs?: number): FilterResult {
  try {
    const f = object(input, '', ['occurred', 'event', 'resource', 'related', 'any_resource', 'id', 'text', 'order']);
    const nowUs = nowMs * 1000;
    const occurred = f.occurred === undefined ? {} : object(f.occurred, 'occurred', ['since', 'until']);
    const startOfDayUs = Math.floor(nowUs / DAY_US) * DAY_US;
    let sinceUs = datetime(occurred.since, 'occurred.since', startOfDayUs - 180 * DAY_US);
    const untilUs = datetime(occurred.until, 'occurred.until', nowUs);
    if (clampMs !== undefined) sinceUs = Math.max(sinceUs, nowUs - clampMs * 1000);
    const parsed: ParsedFilter = { sinceUs, untilUs, related: [], anyResource: [], order: 'DESC' };
    if (f.event !== undefined && f.event !== null) {
      const e = object(f.event, 'event', ['prefix', 'exclude_prefix', 'name', 'exclude_name']);
      parsed.event = compact({ prefix: strings(e.prefix, 'event.prefix'), exclude_prefix: strings(e.exclude_prefix, 'event.exclude_prefix'), name: strings(e.name, 'event.name'), exclude_name: strings(e.exclude_name, 'event.exclude_name') });
    }
    const resource = resourceFilter(f.resource, 'resource', ['id', 'id_prefix', 'labels', 'distinct']);
    if (resource !== undefined) parsed.resource = resource;
    parsed.related = listOf(f.related, 'related', relatedFilter);
    parsed.anyResource = listOf(f.any_resource, 'any_resource', (x, loc) => resourceFilter(x, loc, ['id', 'id_prefix', 'labels']));
    if (f.id !== undefined) {
      const ids = strings(object(f.id, 'id', ['id']).id, 'id.id');
      if (ids !== undefined) {
        parsed.ids = ids.map((s, i) => {
          const u = canonicalUuid(s);
          if (u === undefined) throw new Invalid(`id.id.${i}`, 'Input should be a valid UUID', 'uuid_parsing');
          return u;
        });
      }
    }
    if (f.text !== undefined && f.text !== null) {
      const t = object(f.text, 'text', ['query']);
      if (typeof t.query !== 'string') throw new Invalid('text.query', t.query === undefined ? 'Field required' : 'Input should be a valid string', t.query === undefined ? 'missing' : 'string_type');
      if (t.query.length > 200) throw new Invalid('text.query', 'String should have at most 200 characters', 'string_too_long');
      parsed.text = parseTextQuery(t.query);
    }
    if (f.order !== undefined) {
      if (f.order !== 'ASC' && f.order !== 'DESC') throw new Invalid('order', "Input should be 'ASC' or 'DESC'", 'enum');
      parsed.order = f.order;
    }
    return { ok: true, filter: parsed };
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    return { ok: false, error: `1 validation error for EventFilter\n${e.loc === '' ? 'filter' : e.loc}\n  ${e.msg} [type=${e.type}]` };
  }
}

// ---- matching -------------------------------------------------------------------------------------

/** `prefect.server.events.schemas.events.matches`: `!` negates, a trailing `*` is a prefix; a missing label never matches. */
function labelMatches(expected: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  const negative = expected.startsWith('!');
  const e = negative ? expected.slice(1) : expected;
  const match = e.endsWith('*') ? value.startsWith(e.slice(0, -1)) : value === e;
  return negative ? !match : match;
}

function specMatches(spec: Labels, resource: Record<string, string>): boolean {
  return Object.entries(spec).every(([label, expected]) => expected.some((c) => labelMatches(c, resource[label])));
}

function resourceMatches(f: ResourceFilter, r: Record<string, string>): boolean {
  const id = r['prefect.resource.id'] ?? '';
  if (f.id?.length && !f.id.includes(id)) return false;
  if (f.id_prefix?.length && !f.id_prefix.some((p) => id.startsWith(p))) return false;
  if (f.labels !== undefined && Object.keys(f.labels).length > 0 && !specMatches(f.labels, r)) return false;
  return true;
}

/** The SQL form for one related row: every given condition on the same row. */
function relatedRowMatches(f: RelatedFilter, r: Record<string, string>, primary: boolean): boolean {
  const id = r['prefect.resource.id'] ?? '';
  const role = primary ? '' : (r['prefect.resource.role'] ?? '');
  const used = Boolean(f.id?.length || f.role?.length || f.resources_in_roles?.length || (f.labels && Object.keys(f.labels).length > 0));
  if (!used) return true;
  if (f.id?.length && !f.id.includes(id)) return false;
  if (f.role?.length ? !f.role.includes(role) : role === '') return false;
  if (f.resources_in_roles?.length && !f.resources_in_roles.some(([i, ro]) => i === id && ro === role)) return false;
  if (f.labels !== undefined) {
    for (const [label, values] of Object.entries(f.labels)) {
      if (values.length === 0) {
        if (label === 'prefect.resource.id' || label === 'prefect.resource.role') continue;
        return false;
      }
      if (label === 'prefect.resource.role') {
        if (!values.includes(role)) return false;
        continue;
      }
      const value = label === 'prefect.resource.id' ? id : r[label];
      const neg = values.filter((v) => v.startsWith('!')).map((v) => v.slice(1));
      const pos = values.filter((v) => !v.startsWith('!'));
      const test = (p: string, v: string) => (p.endsWith('*') ? v.startsWith(p.replace(/\*+$/, '')) : v === p);
      if (neg.length > 0 && value === undefined) return false;
      const posSimple = pos.filter((p) => !p.endsWith('*'));
      if (posSimple.length > 0 && (value === undefined || !posSimple.includes(value))) return false;
      for (const p of pos.filter((x) => x.endsWith('*'))) if (value === undefined || !test(p, value)) return false;
      for (const n of neg) if (value !== undefined && test(n, value)) return false;
    }
  }
  return true;
}

function textMatches(q: TextQuery, ev: WireEvent): boolean {
  const parts = [ev.event, ...Object.values(ev.resource ?? {}), ...(ev.related ?? []).flatMap((r) => Object.values(r)), JSON.stringify(ev.payload ?? {})];
  const text = parts.join(' ').toLowerCase();
  if (q.include.length > 0 && !q.include.some((t) => text.includes(t.toLowerCase()))) return false;
  if (q.exclude.some((t) => text.includes(t.toLowerCase()))) return false;
  return q.required.every((t) => text.includes(t.toLowerCase()));
}

/** Does `ev` (occurring at `occurredUs`) pass the filter? `related: true` also applies the related filters (backfill, REST). */
export function matches(f: ParsedFilter, ev: WireEvent, occurredUs: number | undefined, opts: { related?: boolean } = {}): boolean {
  if (occurredUs === undefined || occurredUs < f.sinceUs || occurredUs > f.untilUs) return false;
  const name = typeof ev.event === 'string' ? ev.event : '';
  const n = f.event;
  if (n !== undefined) {
    if (n.prefix?.length && !n.prefix.some((p) => name.startsWith(p))) return false;
    if (n.exclude_prefix?.length && n.exclude_prefix.some((p) => name.startsWith(p))) return false;
    if (n.name?.length && !n.name.includes(name)) return false;
    if (n.exclude_name?.length && n.exclude_name.includes(name)) return false;
  }
  const resource = isObject(ev.resource) ? ev.resource : {};
  const related = Array.isArray(ev.related) ? ev.related : [];
  if (f.resource !== undefined && !resourceMatches(f.resource, resource)) return false;
  for (const a of f.anyResource) if (![resource, ...related].some((r) => resourceMatches(a, r))) return false;
  if (f.ids?.length && !f.ids.includes(canonicalUuid(ev.id) ?? String(ev.id))) return false;
  if (f.text !== undefined && !textMatches(f.text, ev)) return false;
  if (opts.related === true) {
    for (const r of f.related) {
      const rows: [Record<string, string>, boolean][] = [[resource, true], ...related.map((x): [Record<string, string>, boolean] => [x, false])];
      if (!rows.some(([row, primary]) => relatedRowMatches(r, row, primary))) return false;
    }
  }
  return true;
}
