/**
 * Run links for a Prefect Cloud workspace: with PREFECT_UI_URL unset, the workspace's UI address that
 * Prefect's client derives from PREFECT_API_URL (src/prefect/settings/models/_defaults.py
 * `default_ui_url`), and its run pages (`runs/flow-run/<id>`, `runs/task-run/<id>`: UI_URL_FORMATS in
 * src/prefect/utilities/urls.py), in the span attributes and the STLOGGING lines.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { cli, FLOW, FR, smallRun, TR } from '../helpers/replay-cli.js';
import { logLines } from '../helpers/watch-e2e.js';

const ACCOUNT = '9b5e6a10-1c2d-4e3f-8a9b-0c1d2e3f4a5b';
const WORKSPACE = '3f2e1d0c-b9a8-4765-9432-10fedcba9876';
const UI = `https://app.prefect.cloud/account/${ACCOUNT}/workspace/${WORKSPACE}`;

test('a replay for a Prefect Cloud workspace without PREFECT_UI_URL links every run to its page in the workspace UI', async () => {
  const receiver = await startOtlpReceiver();
  try {
    const r = await cli(['replay', '-'], {
      PREFECT_API_URL: `https://api.prefect.cloud/api/accounts/${ACCOUNT}/workspaces/${WORKSPACE}`,
      PREFECT_API_KEY: 'pnu_cloudlinks0123456789',
      // The look-up of Prefect's own spans goes nowhere (a proxy that is not there) instead of to Cloud.
      HTTPS_PROXY: 'http://127.0.0.1:9',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    }, smallRun().join('\n'));
    assert.equal(r.code, 0, r.stderr);
    const spans = Object.fromEntries(receiver.spans().map((s) => [s.attributes['prefect.run.id'], s.attributes]));
    assert.deepEqual(spans, {
      [FR]: {
        'prefect.run.id': FR, 'prefect.run.type': 'flow', 'prefect.run.name': 'crimson-fox', 'prefect.run.count': 1,
        'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.tags': [],
        'prefect.flow.name': FLOW.flowName, 'prefect.flow.id': FLOW.flowId,
        'cicd.pipeline.name': FLOW.flowName, 'cicd.pipeline.run.id': FR, 'cicd.pipeline.result': 'failure',
        'cicd.pipeline.run.url.full': `${UI}/runs/flow-run/${FR}`,
        'error.type': 'Failed',
      },
      [TR]: {
        'prefect.run.id': TR, 'prefect.run.type': 'task', 'prefect.run.name': 'extract-3f2', 'prefect.run.count': 1,
        'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.tags': [],
        'prefect.flow.name': FLOW.flowName, 'prefect.flow.id': FLOW.flowId, 'prefect.task.key': 'extract-9a8b7c6d',
        'cicd.pipeline.task.name': 'extract', 'cicd.pipeline.task.run.id': TR, 'cicd.pipeline.task.run.result': 'failure',
        'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${TR}`,
        'error.type': 'Failed',
      },
    });
    const lines = logLines(r.stdout).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('STLOGGING: '));
    assert.deepEqual(
      lines.map((l) => [l['prefect.run.id'], l['prefect.run.url']]),
      [
        [FR, `${UI}/runs/flow-run/${FR}`],
        [TR, `${UI}/runs/task-run/${TR}`],
        [TR, `${UI}/runs/task-run/${TR}`],
        [FR, `${UI}/runs/flow-run/${FR}`],
      ],
    );
    assert.ok(!`${r.stdout}${r.stderr}`.includes('pnu_cloudlinks0123456789'));
  } finally {
    await receiver.close();
  }
});
