/**
 * A strict reader of the Prometheus text exposition format 0.0.4, as Prometheus itself reads it and
 * stricter where the format says "should": it throws on the first line that breaks a rule, naming
 * the line. Rules: `# HELP` and `# TYPE` at most once per family and before its samples; a family's
 * samples together; metric and label names valid (no `__` label prefix); HELP text escaped (`\\`,
 * `\n`) and label values escaped (`\\`, `\"`, `\n`); no label twice in a sample; values spelt as
 * the format documents them (Go floats, `NaN`, `+Inf`, `-Inf`; not JavaScript's `Infinity`, no
 * separators); no series twice; counters not negative; histograms with `_bucket`s ascending by `le`
 * to `+Inf`, cumulative, the `+Inf` bucket equal to `_count`, `_sum` and `_count` present; the text
 * ending with a newline.
 */

export interface Sample {
  /** The sample's own name (`…_bucket`, `…_sum` for a histogram). */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly help: string | undefined;
  readonly samples: readonly Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A value as Prometheus parses it. */
function parseValue(text: string, where: string): number {
  if (text === 'NaN') return NaN;
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (!FLOAT.test(text)) throw new Error(`${where}: value ${JSON.stringify(text)} is not a number Prometheus reads`);
  return Number(text);
}

/** The family a sample name belongs to, given the families typed so far. */
function familyOf(name: string, types: ReadonlyMap<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const type = types.get(base);
      if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
    }
  }
  return name;
}

function unescapeHelp(text: string, where: string): string {
  return text.replace(/\\(.?)/g, (_m, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`${where}: HELP text has an escape \\${c} the format does not know`);
  });
}

/** Labels of `{…}`, from `at` (just after `{`); returns them and the index after `}`. */
function parseLabels(line: string, at: number, where: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let i = at;
  for (;;) {
    if (line[i] === '}') return [labels, i + 1];
    const eq = line.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: a label without =`);
    const name = line.slice(i, eq);
    if (!LABEL_NAME.test(name) || name.startsWith('__')) throw new Error(`${where}: invalid label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    if (line[eq + 1] !== '"') throw new Error(`${where}: label ${name}'s value is not quoted`);
    let value = '';
    let j = eq + 2;
    for (;; j++) {
      const c = line[j];
      if (c === undefined) throw new Error(`${where}: label ${name}'s value is not closed`);
      if (c === '"') break;
      if (c === '\\') {
        const e = line[++j];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else throw new Error(`${where}: label ${name}'s value has an escape \\${e ?? ''} the format does not know`);
      } else value += c;
    }
    labels[name] = value;
    i = j + 1;
    if (line[i] === ',') i += 1;
    else if (line[i] !== '}') throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  return `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

function checkHistogram(family: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = seriesKey('', rest);
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name === `${family.name}_bucket`) {
      if (le === undefined) throw new Error(`${family.name}: a _bucket sample without le`);
      g.buckets.push([parseValue(le, `${family.name}_bucket le`), s.value]);
    } else if (le !== undefined) throw new Error(`${family.name}: le on ${s.name}`);
    else if (s.name === `${family.name}_sum`) g.sum = s.value;
    else if (s.name === `${family.name}_count`) g.count = s.value;
    else throw new Error(`${family.name}: sample ${s.name} in a histogram`);
  }
  for (const [key, g] of groups) {
    const at = `${family.name}${key === '{}' ? '' : key}`;
    if (g.sum === undefined || g.count === undefined) throw new Error(`${at}: _sum or _count missing`);
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0])) throw new Error(`${at}: le ${g.buckets[i]![0]} not above ${g.buckets[i - 1]![0]}`);
      if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`${at}: bucket le=${g.buckets[i]![0]} below the one before: not cumulative`);
    }
    const last = g.buckets.at(-1);
    if (last === undefined || last[0] !== Infinity) throw new Error(`${at}: no +Inf bucket last`);
    if (last[1] !== g.count) throw new Error(`${at}: +Inf bucket ${last[1]} differs from _count ${g.count}`);
  }
}

/** Reads `text` strictly; throws on the first rule broken. */
export function parsePrometheusText(text: string): Family[] {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the text does not end with a newline');
  const families: { name: string; type: Family['type']; help: string | undefined; samples: Sample[] }[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const closed = new Set<string>();
  const series = new Set<string>();
  let current: (typeof families)[number] | undefined;
  const open = (name: string): (typeof families)[number] => {
    if (current?.name === name) return current;
    if (closed.has(name) || families.some((f) => f.name === name)) throw new Error(`family ${name}: its lines are not together`);
    if (current !== undefined) closed.add(current.name);
    current = { name, type: (types.get(name) ?? 'untyped') as Family['type'], help: undefined, samples: [] };
    families.push(current);
    return current;
  };
  const lines = text.split('\n').slice(0, -1);
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (m === null) return; // a comment
      const [, kind, name, rest = ''] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: invalid metric name ${JSON.stringify(name)}`);
      if (kind === 'TYPE') {
        if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${JSON.stringify(rest)}`);
        const f = open(name);
        if (f.samples.length > 0) throw new Error(`${where}: TYPE for ${name} after its samples`);
        types.set(name, rest);
        f.type = rest as Family['type'];
      } else {
        if (helps.has(name)) throw new Error(`${where}: second HELP for ${name}`);
        helps.add(name);
        open(name).help = unescapeHelp(rest, where);
      }
      return;
    }
    const nameEnd = line.search(/[{ \t]/);
    if (nameEnd <= 0) throw new Error(`${where}: no value`);
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`${where}: invalid metric name ${JSON.stringify(name)}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (line[i] === '{') [labels, i] = parseLabels(line, i + 1, where);
    const rest = line.slice(i);
    const m = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?$/.exec(rest);
    if (m === null) throw new Error(`${where}: expected a value (and a timestamp) after the series, got ${JSON.stringify(rest)}`);
    const value = parseValue(m[1]!, where);
    const key = seriesKey(name, labels);
    if (series.has(key)) throw new Error(`${where}: series ${key} twice`);
    series.add(key);
    const f = open(familyOf(name, types));
    if (f.type === 'counter' && value < 0) throw new Error(`${where}: counter ${name} is negative`);
    f.samples.push({ name, labels, value });
  });
  for (const f of families) if (f.type === 'histogram') checkHistogram(f);
  return families;
}
