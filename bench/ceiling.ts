/**
 * The ceiling (child process): a websocket client that does the Prefect handshake, then only
 * receives frames and `JSON.parse`s them. Prints `{"frames":…,"ms":…,"cpuMs":…}`: first frame to
 * last, and the process's CPU time in between.
 */
import WebSocket from 'ws';
import { cpuMsSince } from './cpu.js';

const [url, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
const ws = new WebSocket(url!, ['prefect'], { perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
let frames = 0;
let first = 0;
let cpu = process.cpuUsage();
let sink = 0;
ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', token: null })));
ws.on('message', (data: Buffer) => {
  const text = data.toString();
  if (frames === 0 && text.includes('"auth_success"')) {
    ws.send(JSON.stringify({ type: 'filter', filter: {}, backfill: true }));
    frames = -1;
    return;
  }
  if (frames === -1) {
    frames = 0;
    first = performance.now();
    cpu = process.cpuUsage();
  }
  const value = JSON.parse(text) as { event?: { id?: string } };
  sink += value.event?.id?.length ?? 0;
  frames += 1;
  if (frames === expected) {
    const ms = performance.now() - first;
    process.stdout.write(`${JSON.stringify({ frames, ms, cpuMs: cpuMsSince(cpu), sink })}\n`);
    ws.close();
  }
});
