import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactCredentials, redactTokenFields, redactUrlValue, redactUserinfo, safeUrl, secretRedactor } from '../../src/log/redact.js';

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

  it('redactCredentials replaces credentials in the forms recordings, header dumps and environment listings write them; the rest stays', () => {
    assert.deepEqual(
      [
        '> Authorization: Bearer pnu_AbCdEf0123456789XyZ',
        '< proxy-authorization: Basic YWRtaW46SHVudGVyMlBhc3M=',
        '{"headers": {"Authorization": "Basic YWRtaW46SHVudGVyMlBhc3M=", "Accept": "application/json"}}',
        'sent Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig with basic YWRtaW46cGFzcw==',
        'key pnu_ZZZZ0123456789yyyy and pnb_Service0123 in a note',
        'export PREFECT_API_KEY=pnu_ZZZZ0123456789yyyy && prefect deploy',
        "PREFECT_API_AUTH_STRING='admin:Hunter2 Pass' prefect-otel",
        'PREFECT_CLIENT_CUSTOM_HEADERS={"CF-Access-Client-Secret": "CfSecret5551234"}',
        '{"OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=HcKey0123", "OTEL_SERVICE_NAME": "etl"}',
        'curl http://admin:Hunter2Pass@prefect:4200/api/events/filter?token=T0kenValue&limit=50',
        'POST https://otlp.vendor.io/v1/traces?region=eu&key=AIzaVendorKey0&api-key=Other0Key',
        '{"password": "Hunter2Pass", "api_key": "k3y\\"x", "name": "crimson-fox"}',
        '{"type":"auth","token":"pnu_abc"}',
        '{"type":"auth","token":"admin:Hunter2Pass"}',
        '{"type":"event","event":{"id":"x","resource":{"prefect.resource.name":"Basic ETL"}}}',
      ].map(redactCredentials),
      [
        '> Authorization: [redacted]',
        '< proxy-authorization: [redacted]',
        '{"headers": {"Authorization": "[redacted]", "Accept": "application/json"}}',
        'sent Bearer [redacted] with basic [redacted]',
        'key [redacted] and [redacted] in a note',
        'export PREFECT_API_KEY=[redacted] && prefect deploy',
        'PREFECT_API_AUTH_STRING=[redacted] prefect-otel',
        'PREFECT_CLIENT_CUSTOM_HEADERS=[redacted]',
        '{"OTEL_EXPORTER_OTLP_HEADERS": [redacted], "OTEL_SERVICE_NAME": "etl"}',
        'curl http://[redacted]@prefect:4200/api/events/filter?token=[redacted]&limit=50',
        'POST https://otlp.vendor.io/v1/traces?region=eu&key=[redacted]&api-key=[redacted]',
        '{"password": "[redacted]", "api_key": "[redacted]", "name": "crimson-fox"}',
        '{"type":"auth","token":"[redacted]"}',
        '{"type":"auth","token":"[redacted]"}',
        '{"type":"event","event":{"id":"x","resource":{"prefect.resource.name":"Basic ETL"}}}',
      ],
    );
  });
});

describe('redact: known secret values', () => {
  it('secretRedactor replaces each value and each long word of it wherever a text quotes them; short values and words stay', () => {
    const redact = secretRedactor(['Bearer s3cr3t-t0ken-value', ' tenant-42 ', 'x1', 'Basic dXNlcjpwYXNz']);
    assert.deepEqual(
      [
        'HTTP 401: invalid credentials "Bearer s3cr3t-t0ken-value" for tenant-42',
        'token s3cr3t-t0ken-value refused; expected Basic auth, got Basic dXNlcjpwYXNz',
        'x1 Bearer tenant-4',
      ].map(redact),
      [
        'HTTP 401: invalid credentials "[redacted]" for [redacted]',
        'token [redacted] refused; expected Basic auth, got [redacted]',
        'x1 Bearer tenant-4',
      ],
    );
    assert.equal(secretRedactor(['', 'ab'])('ab and more'), 'ab and more');
  });
});
