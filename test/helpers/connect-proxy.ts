/**
 * An HTTP proxy that only tunnels (`CONNECT host:port`), as corporate egress proxies do: it records
 * each tunnel asked for, can ask for credentials (407 without the right Proxy-Authorization), and
 * pipes the bytes both ways. Loopback, port 0.
 */
import { createServer } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';

export interface ConnectProxy {
  /** `http://127.0.0.1:PORT` (no credentials). */
  readonly url: string;
  readonly port: number;
  /** Every CONNECT: the authority asked for, the Proxy-Authorization sent, the status answered. */
  readonly tunnels: { authority: string; proxyAuthorization: string | undefined; status: number }[];
  close(): Promise<void>;
}

export async function startConnectProxy(options: { credentials?: string } = {}): Promise<ConnectProxy> {
  const tunnels: ConnectProxy['tunnels'] = [];
  const sockets = new Set<Socket>();
  const wanted = options.credentials === undefined ? undefined : `Basic ${Buffer.from(options.credentials).toString('base64')}`;
  const server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req, client: Socket, head: Buffer) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    // A client that resets a refused or finished tunnel is no failure of the test.
    client.on('error', () => undefined);
    const authority = req.url ?? '';
    const proxyAuthorization = req.headers['proxy-authorization'];
    if (wanted !== undefined && proxyAuthorization !== wanted) {
      tunnels.push({ authority, proxyAuthorization, status: 407 });
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const [host, port] = [authority.slice(0, authority.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(authority.slice(authority.lastIndexOf(':') + 1))];
    const upstream = connect(port, host, () => {
      tunnels.push({ authority, proxyAuthorization, status: 200 });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    tunnels,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A proxy that takes connections and never answers: how many it took, how many are still open. */
export interface SilentProxy {
  readonly url: string;
  readonly accepted: () => number;
  readonly open: () => number;
  close(): Promise<void>;
}

export async function startSilentProxy(): Promise<SilentProxy> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createNetServer((s) => {
    accepted += 1;
    sockets.add(s);
    s.resume(); // read, so that the client's close is seen
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted: () => accepted,
    open: () => sockets.size,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
