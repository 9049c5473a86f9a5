// A stand-in for lens_server.py that misbehaves on purpose (FAKE_WORKER_MODE), for the bridge's
// failure paths that the real worker cannot be made to show. Started through a tiny shell "python".
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { Router } from 'zeromq';

const mode = process.env.FAKE_WORKER_MODE ?? 'normal';
const packr = new Packr({ useRecords: false });

// Like the real worker: gone when the parent closes our stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

if (mode === 'crash-on-start') {
  console.error("ModuleNotFoundError: No module named 'torch'");
  process.exit(1);
}
if (mode === 'mute') {
  console.error('starting very slowly');
  setInterval(() => {}, 1_000);
} else {
  const router = new Router({ linger: 0 });
  const folder = mkdtempSync(join(tmpdir(), 'dlens-fake-'));
  process.on('exit', () => rmSync(folder, { recursive: true, force: true }));
  const endpoint = `ipc://${join(folder, 'worker.sock')}`;
  await router.bind(endpoint);
  const protocol = mode === 'protocol2' ? 2 : 1;
  console.log(JSON.stringify({ event: 'listening', endpoint, pid: process.pid, protocol }));

  const reply = (identity, message) => router.send([identity, packr.pack({ v: 1, ...message })]);
  let heartbeatTarget = null;
  if (mode !== 'silent') {
    setInterval(() => {
      if (heartbeatTarget) void reply(heartbeatTarget, { id: '', type: 'heartbeat', busy: false });
    }, 200);
  }

  for await (const [identity, frame] of router) {
    const request = packr.unpack(frame);
    const { id } = request;
    if (request.type === 'hello') {
      heartbeatTarget = identity;
      await reply(identity, {
        id,
        type: 'ready',
        protocol: 1,
        worker: 'fake',
        python: '0',
        torch: '0',
        diffusers: '0',
        transformers: '0',
        device: 'cpu',
        families: [
          {
            name: 'sd',
            pipeline_classes: ['StableDiffusionPipeline'],
            stages: 1,
            guidance: 'cfg',
            schedulers: ['default'],
            options: {
              load: { type: 'object', properties: {}, additionalProperties: false },
              sample: { type: 'object', properties: {}, additionalProperties: false },
              stage2: { type: 'object', properties: {}, additionalProperties: false },
            },
          },
        ],
        heartbeat_s: 0.2,
      });
    } else if (mode === 'silent') {
      // Hung after the handshake: no replies, no heartbeats.
    } else if (request.type === 'ping' && mode === 'bad-reply') {
      // A pong whose envelope is broken (v is a string): the bridge must fail the ping, not crash.
      await router.send([identity, packr.pack({ v: '1', id, type: 'pong' })]);
    } else if (request.type === 'ping' && mode === 'garbage') {
      // A truncated msgpack array (two elements announced, one sent), then the real answer.
      await router.send([identity, Buffer.from([0x92, 0x01])]);
      await reply(identity, { id, type: 'pong', busy: false });
    } else if (request.type === 'ping') {
      await reply(identity, { id, type: 'pong', busy: false });
    } else if (request.type === 'shutdown') {
      await reply(identity, { id, type: 'bye' });
      process.exit(0);
    }
  }
}
