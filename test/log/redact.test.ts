import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactTokenFields, redactUrlValue, redactUserinfo, safeUrl } from '../../src/log/redact.js';

describe('redact: URL user info', () => {
  it('safeUrl drops the user info, a password with a raw @ included, and leaves other URLs as given', () => {
    assert.deepEqual(
      [
        'wss://admin:pass@host/api/events/out',
        'http://admin:pa@ss@127.0.0.1:1/api',
        'http://bob:hunter@2@127.0.0.1:9/',
        'https://user@host:8443/x?q=a@b#c@d',
        'http://127.0.0.1:4200/api',
        'https://api.prefect.cloud/api/accounts/a/workspaces/w',
        'http://otuser:OTPASSWD@[::1',
      ].map(safeUrl),
      [
        'wss://host/api/events/out',
        'http://127.0.0.1:1/api',
        'http://127.0.0.1:9/',
        'https://host:8443/x?q=a@b#c@d',
        'http://127.0.0.1:4200/api',
        'https://api.prefect.cloud/api/accounts/a/workspaces/w',
        'http://[::1',
      ],
    );
  });

  it('redactUserinfo replaces the user info of every URL in a text, up to its last @ before the path', () => {
    assert.equal(
      redactUserinfo("Could not parse environment-provided export URL: 'http://otuser:OT@PASS@[::1', and ws://a:b@h/p?x=y@z"),
      "Could not parse environment-provided export URL: 'http://[redacted]@[::1', and ws://[redacted]@h/p?x=y@z",
    );
  });

  it('a URL that does not parse because its password holds a /, ? or # loses everything up to its last @: in a text, in a value, and in safeUrl', () => {
    assert.equal(
      redactUserinfo("Could not parse environment-provided export URL: 'http://user:pa/ss@host:4318', falling back; https://u:p?w#d@h/x failed; ws://a:b@h/p?x=y@z"),
      "Could not parse environment-provided export URL: 'http://[redacted]@host:4318', falling back; https://[redacted]@h/x failed; ws://[redacted]@h/p?x=y@z",
    );
    assert.deepEqual(
      ['http://user:pa ss/x@host:4200/api', 'http://user:pa/ss@host:4200/api', 'http://127.0.0.1:99999/api', 'https//api.vendor.io/otlp?api-key=SECRETQ&region=eu#x'].map(redactUrlValue),
      ['http://[redacted]@host:4200/api', 'http://[redacted]@host:4200/api', 'http://127.0.0.1:99999/api', 'https//api.vendor.io/otlp?api-key=[redacted]&region=[redacted]#x'],
    );
    assert.deepEqual(['http://user:pa/ss@host:4200/api', 'http://user:p#ss@host'].map(safeUrl), ['http://host:4200/api', 'http://host']);
  });

  it('redactTokenFields replaces every "token" string, escaped quotes and all, also one an excerpt cut short; other fields stay', () => {
    assert.deepEqual(
      [
        '{"type":"auth","token":"pnu_abc"}',
        '{"token" : "a\\"b\\\\", "type":"auth"} {"token":"x"}',
        '{"type":"auth","token":"pnu_abcdef…',
        '{"type":"auth","token":null}',
        '{"type":"event","event":{"id":"token"}}',
      ].map(redactTokenFields),
      [
        '{"type":"auth","token":"[redacted]"}',
        '{"token" : "[redacted]", "type":"auth"} {"token":"[redacted]"}',
        '{"type":"auth","token":"[redacted]"',
        '{"type":"auth","token":null}',
        '{"type":"event","event":{"id":"token"}}',
      ],
    );
  });
});
