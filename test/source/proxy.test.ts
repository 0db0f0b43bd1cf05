/** Which proxy a Prefect URL goes through, from HTTP(S)_PROXY and NO_PROXY as Python (and so Prefect's client) reads them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { proxyEnv, proxyFor, proxyProblem } from '../../src/source/proxy.js';

test('proxyFor: the scheme picks HTTPS_PROXY or HTTP_PROXY, lower case first; NO_PROXY hosts, subdomains, ports, IPs and * go direct', () => {
  const env = proxyEnv({ https_proxy: 'http://lower:3128', HTTPS_PROXY: 'http://upper:3128', HTTP_PROXY: 'proxy.corp:8080', NO_PROXY: 'internal.example, .corp.example,*.svc.local,10.0.0.7,api.example:8443,[::1]' })!;
  const via = (url: string): string | undefined => proxyFor(new URL(url), env)?.href;
  assert.deepEqual(
    Object.fromEntries(
      [
        'https://api.prefect.cloud/api', 'wss://api.prefect.cloud/api/events/out', 'http://prefect:4200/api', 'ws://prefect:4200/api/events/out',
        'http://internal.example/api', 'https://a.internal.example/api', 'https://notinternal.example/api', 'https://x.corp.example/api', 'https://corp.example/api',
        'http://prefect.ns.svc.local:4200/api', 'http://10.0.0.7:4200/api', 'http://10.0.0.70:4200/api', 'https://api.example:8443/api', 'https://api.example/api', 'http://[::1]:4200/api',
      ].map((u) => [u, via(u)]),
    ),
    {
      'https://api.prefect.cloud/api': 'http://lower:3128/',
      'wss://api.prefect.cloud/api/events/out': 'http://lower:3128/',
      'http://prefect:4200/api': 'http://proxy.corp:8080/',
      'ws://prefect:4200/api/events/out': 'http://proxy.corp:8080/',
      'http://internal.example/api': undefined,
      'https://a.internal.example/api': undefined,
      'https://notinternal.example/api': 'http://lower:3128/',
      'https://x.corp.example/api': undefined,
      'https://corp.example/api': undefined,
      'http://prefect.ns.svc.local:4200/api': undefined,
      'http://10.0.0.7:4200/api': undefined,
      'http://10.0.0.70:4200/api': 'http://proxy.corp:8080/',
      'https://api.example:8443/api': undefined,
      'https://api.example/api': 'http://lower:3128/',
      'http://[::1]:4200/api': undefined,
    },
  );
  assert.equal(proxyFor(new URL('https://anything/api'), proxyEnv({ HTTPS_PROXY: 'http://p:1', no_proxy: '*' })), undefined);
  assert.equal(proxyEnv({ NO_PROXY: 'x', HTTP_PROXY: ' ' }), undefined);
});

test('proxyProblem: an http(s) proxy URL or host:port is usable; anything else is named', () => {
  assert.deepEqual(
    ['http://u:p@proxy:3128', 'https://proxy', 'proxy.corp:8080', 'socks5://proxy:1080', 'http://[bad'].map(proxyProblem),
    [undefined, undefined, undefined, 'expected an http:// or https:// proxy, got socks5:', 'not a URL: "http://[bad"'],
  );
});

test('proxyProblem: a proxy URL that does not parse is named without its credentials, with or without a scheme', () => {
  assert.deepEqual(
    ['otel:s3cret@proxy.corp:99999', 'otel:s3cret@prox y:3128', 'http://otel:s3cret@proxy.corp:99999', 'otel:s3cret@[::1:3128'].map(proxyProblem),
    ['not a URL: "proxy.corp:99999"', 'not a URL: "prox y:3128"', 'not a URL: "http://proxy.corp:99999"', 'not a URL: "[::1:3128"'],
  );
});
