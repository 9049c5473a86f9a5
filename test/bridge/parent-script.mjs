// An orchestrator in miniature, run as its own node process by bridge-orphans.test.ts: starts a
// worker from the built bridge (dist/), prints the worker's pid and endpoint, then behaves as argv[2] says.
import { LensWorker } from '../../dist/bridge/index.js';

const mode = process.argv[2];
const worker = await LensWorker.start();
console.log(JSON.stringify({ pid: worker.pid, endpoint: worker.endpoint }));

if (mode === 'hold') {
  // Stays alive until the test SIGKILLs us.
  setInterval(() => {}, 1_000);
} else if (mode === 'exit') {
  process.exit(0);
} else if (mode === 'forget') {
  // Uses the worker, never closes it, and falls off the end: node must still exit.
  await worker.ping();
}
