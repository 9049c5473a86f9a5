// The fault harness (scripts/faults.mjs, whose full run gives docs/reliability.md its figures) at a reduced
// size: worker kills in a lone worker and in a pool, a CLI stopped by SIGINT and SIGTERM and resumed, and a
// remote worker cut off mid-run. Every run must end complete, with every image once and the bytes of a
// fault-free run.
import { join } from 'node:path';
import { execa } from 'execa';
import { expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

it('survives worker kills, CLI signals and a lost network, losing and duplicating nothing', async () => {
  const result = await execa(
    'node',
    [
      join(root, 'scripts', 'faults.mjs'),
      '--kills',
      '2',
      '--hangs',
      '0',
      '--signals',
      '1',
      '--network',
      '1',
      '--json',
    ],
    { cwd: root, reject: false },
  );
  expect(result.stderr).toBe('');
  const figures = JSON.parse(result.stdout.trim().split('\n').at(-1) ?? '{}');
  expect(figures).toMatchObject({
    local: { kills: 2 },
    pool: { kills: 2 },
    sigint: { trials: 1, exit_codes: [130], resumed_complete: 1 },
    sigterm: { trials: 1, exit_codes: [143], resumed_complete: 1 },
    network: { trials: 1, runs_complete_elsewhere: 1 },
    images_lost: 0,
    images_duplicated: 0,
    images_differing: 0,
    images_unrecorded: 0,
  });
  expect(figures.runs_complete).toBe(figures.runs);
  // The cut-off remote worker is noticed within the heartbeat limit (5 s) and a tick of the watchdog.
  expect(figures.network.detect_ms.max).toBeLessThan(7_000);
  expect(result.exitCode).toBe(0);
}, 900_000);
