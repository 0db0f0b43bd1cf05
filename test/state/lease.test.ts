/**
 * The state file's lock (`<state file>.lock`): one holder at a time, standbys told who holds it,
 * and a take-over once it is released, once its lease has run out, or at once when its holder is a
 * process of this host that no longer runs. Real files; a second holder is a second lease object.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { createStateLease, type AcquireResult, type LeaseHolder } from '../../src/state/lease.js';

/** A standby in a process of its own: it tries to take the lock on `go`, renews it on `renew`, and says what happened in one JSON line each. */
const STANDBY = `
import { createInterface } from 'node:readline';
const { createStateLease } = await import(process.argv[1]);
const lease = createStateLease(process.argv[2], 1000);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
console.log('ready');
await lines.next();
const got = await lease.tryAcquire();
console.log(JSON.stringify({ acquired: got.acquired }));
await lines.next();
const renewed = got.acquired ? await lease.renew() : undefined;
console.log(JSON.stringify({ acquired: got.acquired, held: renewed?.held }));
`;

/** Start `n` standby processes on `file`, and let them go at one moment. */
async function raceStandbys(file: string, n: number): Promise<{ acquired: boolean; held?: boolean; pid: number }[]> {
  const lease = new URL('../../src/state/lease.js', import.meta.url).href;
  const children = Array.from({ length: n }, () => spawn(process.execPath, ['--input-type=module', '-e', STANDBY, lease, file], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const exits = children.map((c) => once(c, 'exit'));
  const outputs = children.map((c) => createInterface({ input: c.stdout })[Symbol.asyncIterator]());
  const next = async (i: number): Promise<string> => String((await outputs[i]!.next()).value);
  const all = async (): Promise<string[]> => Promise.all(children.map((_, i) => next(i)));
  assert.deepEqual(await all(), children.map(() => 'ready'));
  for (const c of children) c.stdin.write('go\n');
  await all();
  for (const c of children) c.stdin.write('renew\n');
  const outcomes = (await all()).map((line, i) => ({ ...(JSON.parse(line) as { acquired: boolean; held?: boolean }), pid: children[i]!.pid! }));
  for (const c of children) c.stdin.end();
  await Promise.all(exits);
  return outcomes;
}

/** A standby's one look at the lock: what it got, its time to wait left out. */
const AHEAD = `
const { createStateLease } = await import(process.argv[1]);
const { expiresInMs: _, ...got } = await createStateLease(process.argv[2], 30000).tryAcquire();
console.log(JSON.stringify(got));
`;

/** Reads the lock it is given over and over until its stdin ends, then says how often it found it there but empty. */
const WATCHER = `
const { readFileSync } = require('node:fs');
let reads = 0, unwritten = 0, open = true;
process.stdin.on('end', () => { open = false; }).resume();
console.log('ready');
const look = () => {
  for (let i = 0; i < 200; i++) {
    try { reads++; if (readFileSync(process.argv[1], 'utf8') === '') unwritten++; } catch {}
  }
  if (open) setImmediate(look); else console.log(JSON.stringify({ reads, unwritten }));
};
look();
`;

/** Keeps a file system full: appends to the file it is given whenever a page is free; says `full` once it first is. */
const FILLER = `
const { appendFileSync } = require('node:fs');
let told = false;
setInterval(() => {
  for (let i = 0; i < 64; i++) {
    try { appendFileSync(process.argv[1], Buffer.alloc(4096)); } catch { if (!told) { told = true; console.log('full'); } }
  }
}, 0);
`;

const stateFile = (): string => join(mkdtempSync(join(tmpdir(), 'prefect-otel-lease-')), 'nested', 'state.json');
/** A state file whose directory exists, with `lock` written as its lock. */
function withLock(lock: string): string {
  const file = stateFile();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.lock`, lock);
  return file;
}
const holderIn = (path: string): LeaseHolder => JSON.parse(readFileSync(path, 'utf8')) as LeaseHolder;
const namespace = (): string | null => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
};

/** Make the lock look last renewed `ms` ago. */
function ageLock(path: string, ms: number): void {
  const at = new Date(Date.now() - ms);
  utimesSync(path, at, at);
}

describe('state file lease', () => {
  it('one holder at a time: the other is told who holds it until it is released, then takes it', async () => {
    const file = stateFile();
    const a = createStateLease(file, 30_000);
    const b = createStateLease(file, 30_000);
    assert.deepEqual(await a.tryAcquire(), { acquired: true });
    const lock = holderIn(`${file}.lock`);
    assert.deepEqual(Object.keys(lock).sort(), ['host', 'pid', 'pidNamespace', 'since', 'token']);
    assert.deepEqual({ pid: lock.pid, host: lock.host, pidNamespace: lock.pidNamespace }, { pid: process.pid, host: hostname(), pidNamespace: namespace() });

    const refused = await b.tryAcquire();
    assert.equal(refused.acquired, false);
    assert.ok(!refused.acquired && refused.expiresInMs > 29_000 && refused.expiresInMs <= 30_000, JSON.stringify(refused));
    assert.deepEqual(!refused.acquired && refused.holder, lock);
    assert.deepEqual(await a.renew(), { held: true });
    assert.deepEqual(await b.renew(), { held: false, holder: lock });

    await b.release(); // not b's: the lock stays
    assert.deepEqual(holderIn(`${file}.lock`), lock);
    await a.release();
    assert.equal(existsSync(`${file}.lock`), false);
    // A look still under way at shutdown, when the lock is released: it leaves no lock behind.
    assert.deepEqual([await a.check(), await a.renew(), existsSync(`${file}.lock`)], [{ held: false, holder: undefined }, { held: false, holder: undefined }, false]);
    assert.deepEqual(await b.tryAcquire(), { acquired: true });
    assert.notEqual(holderIn(`${file}.lock`).token, lock.token);
  });

  it('a lock not renewed for longer than the lease is taken over; its old holder learns it on its next renewal', async () => {
    const file = stateFile();
    const a = createStateLease(file, 1_000);
    const b = createStateLease(file, 1_000);
    await a.tryAcquire();
    const old = holderIn(`${file}.lock`);
    ageLock(`${file}.lock`, 900);
    assert.equal((await b.tryAcquire()).acquired, false);
    ageLock(`${file}.lock`, 1_100);
    assert.deepEqual(await a.renew(), { held: true });
    assert.equal((await b.tryAcquire()).acquired, false, 'a renewal makes the lock fresh again');
    assert.deepEqual(holderIn(`${file}.lock`), old);
    ageLock(`${file}.lock`, 1_100);
    assert.deepEqual(await b.tryAcquire(), { acquired: true, tookOver: old });
    const now = holderIn(`${file}.lock`);
    assert.deepEqual(await a.renew(), { held: false, holder: now });
    assert.deepEqual(await b.renew(), { held: true });
  });

  it('a holder of this host that no longer runs is taken over at once; one of another host only when its lease runs out', async () => {
    assert.ok(namespace() !== null, 'a Linux process namespace');
    const gone = spawnSync(process.execPath, ['-e', '']).pid;
    const dead: LeaseHolder = { pid: gone, host: hostname(), pidNamespace: namespace(), token: 'a-process-that-exited', since: new Date().toISOString() };
    const b = createStateLease(withLock(JSON.stringify(dead)), 60_000);
    assert.deepEqual(await b.tryAcquire(), { acquired: true, tookOver: dead, holderGone: true });
    // This process's pid from before it started: a restarted container, whose process is pid 1 again.
    const earlier: LeaseHolder = { ...dead, pid: process.pid, token: 'before-the-restart', since: new Date(Date.now() - 3_600_000).toISOString() };
    assert.deepEqual(await createStateLease(withLock(JSON.stringify(earlier)), 60_000).tryAcquire(), { acquired: true, tookOver: earlier, holderGone: true });

    // The same pid elsewhere (another host, or another container's namespace) says nothing about this host.
    for (const elsewhere of [{ ...dead, host: `${hostname()}-other` }, { ...dead, pidNamespace: 'pid:[1]' }]) {
      const file2 = withLock(JSON.stringify(elsewhere));
      const c = createStateLease(file2, 60_000);
      const refused = await c.tryAcquire();
      assert.deepEqual(refused.acquired ? refused : { ...refused, expiresInMs: 0 }, { acquired: false, holder: elsewhere, expiresInMs: 0 });
      ageLock(`${file2}.lock`, 61_000);
      assert.deepEqual(await c.tryAcquire(), { acquired: true, tookOver: elsewhere });
    }
  });

  it('a lock that is not one (empty, cut short) is waited out like any other, and a lock removed by hand is made again, said to be remade', async () => {
    const file = withLock('{"pid":');
    const a = createStateLease(file, 1_000);
    const refused = await a.tryAcquire();
    assert.deepEqual(refused.acquired ? refused : { ...refused, expiresInMs: 0 }, { acquired: false, holder: undefined, expiresInMs: 0 });
    ageLock(`${file}.lock`, 1_500);
    assert.deepEqual(await a.tryAcquire(), { acquired: true, tookOver: undefined });
    const mine = holderIn(`${file}.lock`);
    unlinkSync(`${file}.lock`);
    assert.deepEqual(await a.renew(), { held: true, remade: true });
    assert.deepEqual(holderIn(`${file}.lock`), mine);
    assert.deepEqual([await a.renew(), await a.check()], [{ held: true }, { held: true }]);
    unlinkSync(`${file}.lock`);
    assert.deepEqual(await a.check(), { held: true, remade: true });
    assert.deepEqual(holderIn(`${file}.lock`), mine);
    // Its renewal and the look before a save, at once: one makes the lock, the other finds it made by this process, not another's.
    unlinkSync(`${file}.lock`);
    assert.deepEqual(await Promise.all([a.renew(), a.check(), a.check()]), [{ held: true, remade: true }, { held: true, remade: true }, { held: true, remade: true }]);
    assert.deepEqual(holderIn(`${file}.lock`), mine);
  });

  it('a lock made again is never seen unwritten, by this process\'s other look or by another process reading it all the while', async () => {
    const file = stateFile();
    const a = createStateLease(file, 60_000);
    assert.deepEqual(await a.tryAcquire(), { acquired: true });
    const mine = holderIn(`${file}.lock`);
    const reader = spawn(process.execPath, ['-e', WATCHER, `${file}.lock`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const said = createInterface({ input: reader.stdout })[Symbol.asyncIterator]();
    assert.equal((await said.next()).value, 'ready');
    const lost: string[] = [];
    for (let round = 0; round < 300; round++) {
      unlinkSync(`${file}.lock`);
      const looks = await Promise.all(round % 2 === 0 ? [a.renew(), a.check()] : [a.check(), a.renew()]);
      if (looks.some((look) => !look.held)) lost.push(`round ${round}: ${JSON.stringify(looks)}`);
    }
    reader.stdin.end();
    const seen = JSON.parse(String((await said.next()).value)) as { reads: number; unwritten: number };
    assert.deepEqual({ lost, unwritten: seen.unwritten }, { lost: [], unwritten: 0 });
    assert.ok(seen.reads > 300, `the reader read the lock ${seen.reads} times`);
    assert.deepEqual(holderIn(`${file}.lock`), mine);
    assert.deepEqual(readdirSync(dirname(file)).sort(), ['state.json.lock']);
  });

  it('standbys in several processes racing for one stale lock: exactly one takes it over, and keeps it', async () => {
    for (let round = 0; round < 5; round++) {
      const file = withLock(JSON.stringify({ pid: 1, host: 'another-host', pidNamespace: null, token: 'stopped-renewing', since: new Date().toISOString() }));
      ageLock(`${file}.lock`, 5_000);
      const outcomes = await raceStandbys(file, 4);
      const winners = outcomes.filter((o) => o.acquired);
      assert.deepEqual(
        { winners: winners.map((o) => ({ acquired: o.acquired, held: o.held })), others: outcomes.length - winners.length, lockOf: holderIn(`${file}.lock`).pid },
        { winners: [{ acquired: true, held: true }], others: 3, lockOf: winners[0]?.pid },
        `round ${round}: ${JSON.stringify(outcomes)}`,
      );
      assert.deepEqual(readdirSync(dirname(file)), ['state.json.lock'], 'nothing set aside is left behind');
    }
  });

  it('a take-over in progress (its guard) makes another standby wait; a guard left by a process that died taking over is cleared once seen unchanged for a lease', async () => {
    const stale: LeaseHolder = { pid: 1, host: 'another-host', pidNamespace: null, token: 'stopped-renewing', since: new Date().toISOString() };
    const file = withLock(JSON.stringify(stale));
    ageLock(`${file}.lock`, 5_000);
    writeFileSync(`${file}.lock.takeover`, '');
    ageLock(`${file}.lock.takeover`, 5_000); // its age on the file system's clock says nothing: it is watched
    const b = createStateLease(file, 300);
    const looks: AcquireResult[] = [];
    while (looks.at(-1)?.acquired !== true) {
      looks.push(await b.tryAcquire());
      assert.ok(looks.length < 1_000, 'taken over in the end');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(looks[0], { acquired: false, holder: stale, expiresInMs: 300 });
    assert.deepEqual(looks.at(-1), { acquired: true, tookOver: stale });
    assert.deepEqual(readdirSync(dirname(file)), ['state.json.lock']);
  });

  it('a standby whose clock runs ahead of the file system clock by more than the lease leaves a renewed lock alone, and takes one that ran out', { skip: spawnSync('faketime', ['-f', '+0', 'true']).status !== 0 && 'needs faketime' }, async () => {
    const file = stateFile();
    const a = createStateLease(file, 30_000);
    await a.tryAcquire();
    const mine = holderIn(`${file}.lock`);
    const lease = new URL('../../src/state/lease.js', import.meta.url).href;
    const ahead = (): unknown => {
      const r = spawnSync('faketime', ['-f', '+60s', process.execPath, '--input-type=module', '-e', AHEAD, lease, file], { encoding: 'utf8' });
      return JSON.parse(r.stdout) as unknown;
    };
    assert.deepEqual(ahead(), { acquired: false, holder: mine });
    assert.deepEqual(await a.renew(), { held: true });
    ageLock(`${file}.lock`, 31_000);
    assert.deepEqual(ahead(), { acquired: true, tookOver: mine });
    assert.deepEqual(await a.renew(), { held: false, holder: holderIn(`${file}.lock`) });
    assert.deepEqual(readdirSync(dirname(file)), ['state.json.lock']);
  });

  it('renewals on a full file system keep the lock whole and held: a renewal never gives back the space its lock takes', async (t) => {
    // A small file system of its own, kept full by another process that takes every page freed.
    const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-lease-full-'));
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status !== 0) {
      t.skip('mounting a small tmpfs needs root');
      return;
    }
    const filler = spawn(process.execPath, ['-e', FILLER, join(dir, 'filler')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const fillerExit = once(filler, 'exit');
    t.after(async () => {
      filler.kill();
      await fillerExit;
      spawnSync('umount', [dir]);
    });
    const a = createStateLease(join(dir, 'state.json'), 30_000);
    assert.deepEqual(await a.tryAcquire(), { acquired: true });
    const mine = readFileSync(join(dir, 'state.json.lock'), 'utf8');
    filler.stdout.resume();
    await once(filler.stdout, 'data'); // full
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const r = await a.renew().then((o) => JSON.stringify(o), (err: NodeJS.ErrnoException) => err.code ?? String(err));
      outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
    }
    assert.deepEqual({ outcomes: [...outcomes], lock: readFileSync(join(dir, 'state.json.lock'), 'utf8') }, { outcomes: [['{"held":true}', 300]], lock: mine });
  });
});
