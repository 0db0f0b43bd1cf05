/**
 * The REST client's HTTP layer over loopback: redirects, encoded bodies, the deadline, aborts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { createHttpClient, HttpTransportError, keepsAuthorization, MAX_REDIRECTS } from '../../src/source/http-client.js';
import { HAS_OPENSSL, makeCertificates } from '../helpers/certificates.js';
import { startSilentProxy } from '../helpers/connect-proxy.js';

interface Seen {
  readonly server: 'a' | 'b';
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

type Handler = (req: Seen, res: ServerResponse) => void;

const seen: Seen[] = [];
let handler: Handler;
const servers: Server[] = [];
let a: string;
let b: string;

async function listen(name: 'a' | 'b'): Promise<string> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = { server: name, method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(s);
      handler(s, res);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

before(async () => {
  a = await listen('a');
  b = await listen('b');
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

function reset(h: Handler): void {
  seen.length = 0;
  handler = h;
}

const answer = (res: ServerResponse, status: number, body = '', headers: Record<string, string> = {}): void => {
  res.writeHead(status, headers);
  res.end(body);
};

const AUTH = { Authorization: 'Bearer pnu_secret', Accept: 'application/json' };

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('http client', () => {
  const http = createHttpClient({ timeoutMs: 2_000 });

  it('follows redirects on the same origin with the method, body and credentials; a 303 continues as a GET without the body', async () => {
    reset((req, res) => {
      if (req.path === '/api/one') return answer(res, 307, '', { location: '/api/two' });
      if (req.path === '/api/two') return answer(res, 303, '', { location: `${a}/api/three` });
      answer(res, 200, '{"ok":true}');
    });
    const r = await http.send('POST', `${a}/api/one`, { ...AUTH, 'Content-Type': 'application/json' }, '{"x":1}');
    assert.deepEqual(r, { status: 200, text: '{"ok":true}' });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.body, s.headers.authorization, s.headers['content-type']]),
      [
        ['POST', '/api/one', '{"x":1}', 'Bearer pnu_secret', 'application/json'],
        ['POST', '/api/two', '{"x":1}', 'Bearer pnu_secret', 'application/json'],
        ['GET', '/api/three', '', 'Bearer pnu_secret', undefined],
      ],
    );
  });

  it('drops the credentials when a redirect leaves the origin', async () => {
    reset((req, res) => (req.server === 'a' ? answer(res, 302, '', { location: `${b}/elsewhere` }) : answer(res, 200, 'there')));
    assert.deepEqual(await http.send('GET', `${a}/api/flow_runs/x`, AUTH), { status: 200, text: 'there' });
    assert.deepEqual(
      seen.map((s) => [s.server, s.path, s.headers.authorization, s.headers.accept]),
      [
        ['a', '/api/flow_runs/x', 'Bearer pnu_secret', 'application/json'],
        ['b', '/elsewhere', undefined, 'application/json'],
      ],
    );
  });

  it("keeps the credentials on a redirect within the origin and on the same host's upgrade from http to https on the default ports, as Prefect's client does; drops them anywhere else", () => {
    const pairs: [string, string][] = [
      ['http://prefect.example.com/api', 'http://prefect.example.com/other'],
      ['http://prefect.example.com/api', 'https://prefect.example.com/api'],
      ['http://prefect.example.com:80/api', 'https://prefect.example.com:443/api'],
      ['http://prefect.example.com:4200/api', 'https://prefect.example.com/api'],
      ['http://prefect.example.com/api', 'https://prefect.example.com:8443/api'],
      ['http://prefect.example.com/api', 'https://login.example.com/api'],
      ['https://prefect.example.com/api', 'http://prefect.example.com/api'],
      ['http://prefect.example.com/api', 'http://prefect.example.com:8080/api'],
      ['http://127.0.0.1/api', 'https://localhost/api'],
    ];
    assert.deepEqual(
      pairs.map(([from, to]) => [from, to, keepsAuthorization(new URL(from), new URL(to))]),
      [
        ['http://prefect.example.com/api', 'http://prefect.example.com/other', true],
        ['http://prefect.example.com/api', 'https://prefect.example.com/api', true],
        ['http://prefect.example.com:80/api', 'https://prefect.example.com:443/api', true],
        ['http://prefect.example.com:4200/api', 'https://prefect.example.com/api', false],
        ['http://prefect.example.com/api', 'https://prefect.example.com:8443/api', false],
        ['http://prefect.example.com/api', 'https://login.example.com/api', false],
        ['https://prefect.example.com/api', 'http://prefect.example.com/api', false],
        ['http://prefect.example.com/api', 'http://prefect.example.com:8080/api', false],
        ['http://127.0.0.1/api', 'https://localhost/api', false],
      ],
    );
  });

  it('an http URL on port 80 that its server sends to https on port 443 of the same host: the credentials go along, as with Prefect\'s client', async (t) => {
    if (!HAS_OPENSSL) return t.skip('needs openssl');
    const certs = makeCertificates(mkdtempSync(join(tmpdir(), 'prefect-otel-upgrade-')));
    const seenHere: [string, string, string | undefined][] = [];
    const plain = createServer((req, res) => {
      seenHere.push(['http', req.url ?? '', req.headers.authorization]);
      answer(res, 301, '', { location: `https://127.0.0.1${req.url ?? '/'}` });
    });
    const secure = createTlsServer({ key: readFileSync(certs.serverKey), cert: readFileSync(certs.serverCert) }, (req, res) => {
      seenHere.push(['https', req.url ?? '', req.headers.authorization]);
      answer(res, 200, 'upgraded');
    });
    const listen = (server: Server, port: number) =>
      new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(port, '127.0.0.1', () => resolve(true));
      });
    // The default ports: only where this user may listen on them and nothing else does.
    const listening = [await listen(plain, 80), await listen(secure, 443)];
    t.after(() => {
      plain.close();
      secure.close();
    });
    if (listening.includes(false)) return t.skip('ports 80 and 443 of 127.0.0.1 are not free to listen on');
    const client = createHttpClient({ timeoutMs: 5000, tls: { ca: readFileSync(certs.ca, 'utf8') } });
    assert.deepEqual(await client.send('GET', 'http://127.0.0.1/api/task_runs/x', AUTH), { status: 200, text: 'upgraded' });
    client.close();
    assert.deepEqual(seenHere, [
      ['http', '/api/task_runs/x', 'Bearer pnu_secret'],
      ['https', '/api/task_runs/x', 'Bearer pnu_secret'],
    ]);
  });

  it(`stops after ${MAX_REDIRECTS} redirects or at a Location that is not a URL; a redirect without a Location is the answer`, async () => {
    reset((req, res) => answer(res, 301, '', { location: `/hop${seen.length}` }));
    await assert.rejects(http.send('GET', `${a}/start`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === `more than ${MAX_REDIRECTS} redirects`);
    assert.equal(seen.length, MAX_REDIRECTS + 1);
    reset((req, res) => answer(res, 302, '', { location: 'http://[bad' }));
    await assert.rejects(http.send('GET', `${a}/start`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === 'redirected to something that is not a URL');
    reset((req, res) => answer(res, 302, 'moved, but where?'));
    assert.deepEqual(await http.send('GET', `${a}/start`, AUTH), { status: 302, text: 'moved, but where?' });
  });

  it('asks for compressed bodies and decodes gzip, deflate and brotli; a body that will not decode is an error', async () => {
    const text = JSON.stringify({ events: Array.from({ length: 50 }, (_, i) => ({ id: `ev-${i}`, note: 'é ✓' })) });
    for (const [encoding, encode] of [['gzip', gzipSync], ['deflate', deflateSync], ['br', brotliCompressSync]] as const) {
      reset((req, res) => {
        res.writeHead(200, { 'content-encoding': encoding });
        res.end(encode(Buffer.from(text)));
      });
      assert.deepEqual(await http.send('GET', `${a}/api/events`, AUTH), { status: 200, text }, encoding);
      assert.equal(seen[0]!.headers['accept-encoding'], 'gzip, deflate, br');
    }
    reset((req, res) => answer(res, 200, 'plain, not gzip', { 'content-encoding': 'gzip' }));
    await assert.rejects(http.send('GET', `${a}/api/events`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message.startsWith('the gzip body would not decode: '));
  });

  it('an answer larger than the bound, as sent or once decoded, is an error, not a memory spike', async () => {
    const small = createHttpClient({ timeoutMs: 2_000, maxBodyBytes: 64 * 1024 });
    const tooLarge = (err: unknown) => err instanceof HttpTransportError && err.message === 'the answer is larger than 65536 bytes';
    reset((req, res) => answer(res, 200, 'x'.repeat(64 * 1024)));
    assert.equal((await small.send('GET', `${a}/api/events`, AUTH)).text.length, 64 * 1024, 'the bound itself is fine');
    reset((req, res) => answer(res, 200, 'x'.repeat(200 * 1024)));
    await assert.rejects(small.send('GET', `${a}/api/events`, AUTH), tooLarge);
    reset((req, res) => {
      res.writeHead(200, { 'content-encoding': 'gzip' });
      res.end(gzipSync(Buffer.alloc(1024 * 1024, 0x20))); // about 1 KB on the wire
    });
    await assert.rejects(small.send('GET', `${a}/api/events`, AUTH), tooLarge);
    reset((req, res) => answer(res, 200, 'fine'));
    assert.deepEqual(await small.send('GET', `${a}/api/events`, AUTH), { status: 200, text: 'fine' }, 'the client goes on');
  });

  it('one deadline covers the whole exchange: a server that never answers, or stops half-way through the body', async () => {
    const quick = createHttpClient({ timeoutMs: 150 });
    const hung: ServerResponse[] = [];
    reset((req, res) => void hung.push(res));
    await assert.rejects(quick.send('GET', `${a}/hang`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === 'timed out after 150 ms');
    reset((req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
      hung.push(res);
    });
    await assert.rejects(quick.send('GET', `${a}/slow-body`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === 'timed out after 150 ms');
    for (const res of hung) res.destroy();
  });

  it('a proxy that takes the connection but never answers CONNECT: the request times out at its deadline and the proxy connection is closed, each time', async () => {
    const proxy = await startSilentProxy();
    try {
      const quick = createHttpClient({ timeoutMs: 150, proxy: { httpProxy: proxy.url, httpsProxy: undefined, noProxy: undefined } });
      for (let i = 0; i < 2; i++) {
        // Whichever comes first of the two 150 ms timers: the request's deadline or the tunnel's.
        const said = [`the proxy ${proxy.url} did not answer CONNECT ${new URL(a).host} within 150 ms`, 'timed out after 150 ms'];
        await assert.rejects(quick.send('GET', `${a}/api/flow_runs/x`, AUTH), (err: unknown) => err instanceof HttpTransportError && said.includes(err.message));
      }
      await waitUntil('the proxy connections closed', () => proxy.open() === 0);
      assert.deepEqual({ accepted: proxy.accepted(), open: proxy.open() }, { accepted: 2, open: 0 });
    } finally {
      await proxy.close();
    }
  });

  it('an abort stops the request; a refused connection names its code', async () => {
    const hung: ServerResponse[] = [];
    reset((req, res) => void hung.push(res));
    const ac = new AbortController();
    const pending = http.send('GET', `${a}/hang`, AUTH, undefined, ac.signal);
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(pending, (err: unknown) => err instanceof HttpTransportError && err.message === 'aborted');
    for (const res of hung) res.destroy();

    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(http.send('GET', `http://127.0.0.1:${port}/api`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === `connect ECONNREFUSED 127.0.0.1:${port}`);
  });

  it('a connection closed before the whole body arrived is an error, not a short answer', async () => {
    reset((req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
      setTimeout(() => res.destroy(), 10);
    });
    await assert.rejects(http.send('GET', `${a}/cut`, AUTH), (err: unknown) => err instanceof HttpTransportError && err.message === 'the connection closed before the whole answer arrived');
  });

  it('speaks TLS: a server whose certificate no CA vouches for is refused, and trusted through NODE_EXTRA_CA_CERTS', async () => {
    // A self-signed certificate for 127.0.0.1 (openssl req -x509 -newkey rsa:2048 -days 36500
    // -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost), for these tests only.
    const certFile = new URL('../../../test/fixtures/tls/localhost-cert.pem', import.meta.url);
    const tls = createTlsServer({ cert: readFileSync(certFile), key: readFileSync(new URL('../../../test/fixtures/tls/localhost-key.pem', import.meta.url)) }, (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ path: req.url, authorization: req.headers.authorization }));
    });
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://127.0.0.1:${(tls.address() as AddressInfo).port}/api/flow_runs/x`;
      await assert.rejects(http.send('GET', url, AUTH), (err: unknown) => err instanceof HttpTransportError && /^self-signed certificate\b.*\(DEPTH_ZERO_SELF_SIGNED_CERT\)$/.test(err.message)); // Node 26 adds advice
      // A private CA is trusted the way Node is told about one: NODE_EXTRA_CA_CERTS, read at start-up.
      const client = new URL('../../src/source/http-client.js', import.meta.url).href;
      const script = `import { createHttpClient } from ${JSON.stringify(client)};
        const r = await createHttpClient({ timeoutMs: 2000 }).send('GET', ${JSON.stringify(url)}, { Authorization: 'Bearer pnu_secret' });
        process.stdout.write(JSON.stringify(r));`;
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: certFile.pathname } });
      assert.deepEqual(JSON.parse(stdout), { status: 200, text: JSON.stringify({ path: '/api/flow_runs/x', authorization: 'Bearer pnu_secret' }) });
    } finally {
      tls.closeAllConnections();
      await new Promise<void>((resolve) => tls.close(() => resolve()));
    }
  });

  it('keeps a connection for the next request, and closes it once idle', async () => {
    const sockets = new Set<unknown>();
    reset((req, res) => answer(res, 200, 'ok'));
    const server = servers[0]!;
    const onConnection = (socket: unknown): void => void sockets.add(socket);
    server.on('connection', onConnection);
    try {
      const idle = createHttpClient({ timeoutMs: 2_000, idleSocketMs: 100 });
      for (let i = 0; i < 3; i++) assert.deepEqual(await idle.send('GET', `${a}/api/flow_runs/${i}`, AUTH), { status: 200, text: 'ok' });
      assert.equal(sockets.size, 1, 'three requests in a row share one connection');
      await new Promise((r) => setTimeout(r, 300));
      await idle.send('GET', `${a}/api/flow_runs/3`, AUTH);
      assert.equal(sockets.size, 2, 'after 300 ms idle the first connection was closed and a new one opened');
    } finally {
      server.off('connection', onConnection);
    }
  });
});
