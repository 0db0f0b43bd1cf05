import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  shownServerText,
  apiBase,
  authAdvice,
  authSetting,
  eventsOutUrl,
  isApiPath,
  isCloudUrl,
  redactSecrets,
  restAuthHeaders,
  USER_AGENT,
  wsAuthToken,
} from '../../src/source/prefect-api.js';
import { VERSION } from '../../src/version.js';

const CLOUD = 'https://api.prefect.cloud/api/accounts/0a1b2c3d-0000-4000-8000-000000000001/workspaces/0a1b2c3d-0000-4000-8000-000000000002';

describe('prefect-api: URLs', () => {
  it('isApiPath: a self-hosted URL ending in /api (behind a path prefix too) and a Cloud workspace URL are API paths; the server root or the UI is not', () => {
    const urls = ['http://127.0.0.1:4200/api', 'http://127.0.0.1:4200/api/', 'https://prefect.example.com/prefix/API', CLOUD, `${CLOUD}/`, 'http://127.0.0.1:4200', 'http://127.0.0.1:4200/', 'https://prefect.example.com/dashboard', 'not a url'];
    assert.deepEqual(
      Object.fromEntries(urls.map((u) => [u, isApiPath(u)])),
      { 'http://127.0.0.1:4200/api': true, 'http://127.0.0.1:4200/api/': true, 'https://prefect.example.com/prefix/API': true, [CLOUD]: true, [`${CLOUD}/`]: true, 'http://127.0.0.1:4200': false, 'http://127.0.0.1:4200/': false, 'https://prefect.example.com/dashboard': false, 'not a url': false },
    );
  });

  it('eventsOutUrl maps http→ws and https→wss, strips trailing slashes, appends /events/out', () => {
    assert.deepEqual(
      [
        eventsOutUrl('http://127.0.0.1:4200/api'),
        eventsOutUrl('http://127.0.0.1:4200/api/'),
        eventsOutUrl('https://prefect.example.com/api//'),
        eventsOutUrl('HTTPS://prefect.example.com/prefix/api'),
        eventsOutUrl(CLOUD),
        eventsOutUrl(`${CLOUD}/`),
        eventsOutUrl('ws://already/api'),
      ],
      [
        'ws://127.0.0.1:4200/api/events/out',
        'ws://127.0.0.1:4200/api/events/out',
        'wss://prefect.example.com/api/events/out',
        'wss://prefect.example.com/prefix/api/events/out',
        `${CLOUD.replace('https://', 'wss://')}/events/out`,
        `${CLOUD.replace('https://', 'wss://')}/events/out`,
        'ws://already/api/events/out',
      ],
    );
  });

  it('apiBase strips trailing slashes only', () => {
    assert.deepEqual([apiBase('http://h/api///'), apiBase(' http://h/api ')], ['http://h/api', 'http://h/api']);
  });

  it('isCloudUrl recognises prefect.cloud hosts only', () => {
    assert.deepEqual(
      [CLOUD, 'https://api.prefect.cloud/api', 'http://127.0.0.1:4200/api', 'https://prefect.cloud.evil.example/api', 'not a url'].map(isCloudUrl),
      [true, true, false, false, false],
    );
  });
});

describe('prefect-api: auth', () => {
  it('restAuthHeaders: Bearer for a key, Basic base64 for an auth string, nothing otherwise', () => {
    assert.deepEqual(restAuthHeaders({ apiKey: 'pnu_key' }), { Authorization: 'Bearer pnu_key' });
    assert.deepEqual(restAuthHeaders({ authString: 'admin:pass' }), { Authorization: `Basic ${Buffer.from('admin:pass').toString('base64')}` });
    assert.deepEqual(restAuthHeaders({ apiKey: 'pnu_key', authString: 'admin:pass' }), { Authorization: 'Bearer pnu_key' });
    assert.deepEqual(restAuthHeaders({}), {});
    assert.deepEqual(restAuthHeaders({ apiKey: '', authString: '' }), {});
  });

  it('wsAuthToken: the key, else the raw auth string, else null', () => {
    assert.deepEqual(
      [wsAuthToken({ apiKey: 'k', authString: 'a:b' }), wsAuthToken({ authString: 'a:b' }), wsAuthToken({}), wsAuthToken({ apiKey: '' })],
      ['k', 'a:b', null, null],
    );
  });

  it('authSetting names the setting in use, or the one the server kind needs', () => {
    assert.deepEqual(
      [
        authSetting({ apiKey: 'k' }, 'http://h/api'),
        authSetting({ authString: 'a:b' }, CLOUD),
        authSetting({}, CLOUD),
        authSetting({}, 'http://h/api'),
      ],
      ['PREFECT_API_KEY', 'PREFECT_API_AUTH_STRING', 'PREFECT_API_KEY', 'PREFECT_API_AUTH_STRING'],
    );
  });

  it('redactSecrets removes secrets, their base64 form and URL user info', () => {
    const auth = { apiKey: 'pnu_secret', authString: 'admin:hunter2' };
    const b64 = Buffer.from('admin:hunter2').toString('base64');
    assert.equal(
      redactSecrets(`key pnu_secret basic ${b64} raw admin:hunter2 url http://u:p@host/api`, auth),
      'key [redacted] basic [redacted] raw [redacted] url http://[redacted]@host/api',
    );
  });

  it('the user agent carries the version', () => {
    assert.equal(USER_AGENT, `prefect-otel/${VERSION}`);
  });

  it('authAdvice names the setting to fix, and the other kind of credential when the server is of the other kind', () => {
    const SELF = 'http://127.0.0.1:4200/api';
    assert.deepEqual(
      {
        keyToCloud: authAdvice({ apiKey: 'pnu_x' }, CLOUD),
        keyToSelfHosted: authAdvice({ apiKey: 'pnu_x' }, SELF),
        authStringToSelfHosted: authAdvice({ authString: 'admin:pass' }, SELF),
        authStringToCloud: authAdvice({ authString: 'admin:pass' }, CLOUD),
        noneToCloud: authAdvice({}, CLOUD),
        noneToSelfHosted: authAdvice({}, SELF),
      },
      {
        keyToCloud: 'check PREFECT_API_KEY',
        keyToSelfHosted: 'check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)',
        authStringToSelfHosted: 'check PREFECT_API_AUTH_STRING',
        authStringToCloud: 'check PREFECT_API_AUTH_STRING (Prefect Cloud takes PREFECT_API_KEY, not an auth string)',
        noneToCloud: 'set PREFECT_API_KEY',
        noneToSelfHosted: 'set PREFECT_API_AUTH_STRING',
      },
    );
  });
});

describe('prefect-api: the server\'s text as shown', () => {
  const auth = { apiKey: 'pnu_0123456789abcdefghij', customHeaders: { 'X-Gateway-Key': 'gw-secret-value' } };

  it('on one line: whitespace runs as one space, trimmed, other control characters escaped', () => {
    assert.equal(shownServerText('  <html>\r\n  <body>\tBad\u001b[2J Gateway\u2028</body>\n', auth, 200), '<html> <body> Bad\\x1b[2J Gateway </body>');
  });

  it('every credential redacted, also base64-encoded and in a URL\'s user part', () => {
    const basic = Buffer.from('pnu_0123456789abcdefghij').toString('base64');
    assert.equal(
      shownServerText(`key pnu_0123456789abcdefghij, basic ${basic}, header gw-secret-value, url http://user:pw@proxy.example:3128/`, auth, 500),
      'key [redacted], basic [redacted], header [redacted], url http://[redacted]@proxy.example:3128/',
    );
  });

  it('a credential the text ends in the start of (a close reason cut at 123 bytes) is redacted; a shorter start than 6 characters is left', () => {
    assert.equal(shownServerText('Invalid token pnu_0123456', auth, 200), 'Invalid token [redacted]');
    assert.equal(shownServerText('Invalid token pnu_0', auth, 200), 'Invalid token pnu_0');
  });

  it('cut at the length given, with an ellipsis; of a long text only the start is read, and a credential cut there is redacted', () => {
    assert.equal(shownServerText('x'.repeat(50), auth, 10), `${'x'.repeat(10)}…`);
    assert.equal(shownServerText('x'.repeat(10), auth, 10), 'x'.repeat(10));
    const long = `${'a '.repeat(2_045)}pnu_0123456789abcdefghij${'z'.repeat(1_000_000)}`;
    assert.equal(shownServerText(long, auth, 5_000), `${'a '.repeat(2_045)}[redacted]`);
  });
});
