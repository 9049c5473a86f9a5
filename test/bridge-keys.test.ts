// CURVE keys (src/bridge/keys.ts): the layout `diffusion-lens keys` writes, file modes, parse errors, that
// pyzmq reads the files (and we read pyzmq's), and LensWorker.connect with keys against a pyzmq CURVE
// ROUTER with a ZAP authenticator, as the Python worker sets it up: the right keys get `ready`, a wrong
// or missing key gets a clear error within the timeout.
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import {
  addClient,
  certificateText,
  curvePublicKey,
  isZ85Key,
  KeysError,
  LensWorker,
  loadClientKeys,
  loadWorkerKeys,
  makeKeys,
  newKeyPair,
  readCertificate,
  resolveClientKeys,
  WorkerError,
} from '../src/bridge/index.js';
import { findPython, pythonDir } from '../src/bridge/python.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-keys-');
const python = findPython();
const posix = process.platform !== 'win32';
const mode = (file: string): number => statSync(file).mode & 0o777;

function thrown(run: () => unknown): Error {
  try {
    run();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected it to throw');
}

describe('keys layout', () => {
  it('makes a worker pair, a client pair and authorizes the client', () => {
    const dir = join(tempDir(), 'keys');
    const made = makeKeys(dir, { date: new Date('2025-01-02T03:04:05Z') });
    expect(made.files.map((file) => file.slice(dir.length + 1))).toEqual([
      'worker.key',
      'worker.key_secret',
      'client.key',
      'client.key_secret',
      'authorized/client.key',
    ]);
    const worker = readFileSync(join(dir, 'worker.key'), 'utf8');
    expect(worker).toBe(
      '#   ****  Generated on 2025-01-02T03:04:05.000Z by diffusion-lens  ****\n' +
        '#   ZeroMQ CURVE Public Certificate\n' +
        '#   Exchange securely, or use a secure mechanism to verify the contents\n' +
        '#   of this file after exchange. Store public certificates in your home\n' +
        '#   directory, in the .curve subdirectory.\n' +
        '\n' +
        'metadata\n' +
        'curve\n' +
        `    public-key = "${made.workerPublicKey}"\n`,
    );
    const secret = readFileSync(join(dir, 'worker.key_secret'), 'utf8');
    expect(secret).toContain('#   ZeroMQ CURVE **Secret** Certificate\n');
    expect(secret).toMatch(/\n {4}public-key = "(.{40})"\n {4}secret-key = "(.{40})"\n$/);
    const pair = readCertificate(join(dir, 'worker.key_secret'), { secret: true });
    expect(pair.publicKey).toBe(made.workerPublicKey);
    expect(isZ85Key(pair.secretKey ?? '')).toBe(true);
    expect(readFileSync(join(dir, 'authorized', 'client.key'), 'utf8')).toBe(
      readFileSync(join(dir, 'client.key'), 'utf8'),
    );
    expect(made.workerPublicKey).not.toBe(made.clientPublicKey);
  });

  it.runIf(posix)('keeps the secret files and the folder private', () => {
    const dir = join(tempDir(), 'keys');
    makeKeys(dir);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'worker.key_secret'))).toBe(0o600);
    expect(mode(join(dir, 'client.key_secret'))).toBe(0o600);
    expect(mode(join(dir, 'worker.key'))).toBe(0o644);
    expect(mode(join(dir, 'authorized', 'client.key'))).toBe(0o644);
    // --force over a secret file someone opened up makes it private again.
    chmodSync(join(dir, 'client.key_secret'), 0o644);
    makeKeys(dir, { force: true });
    expect(mode(join(dir, 'client.key_secret'))).toBe(0o600);
  });

  it('refuses to replace keys without force, and replaces them with it', () => {
    const dir = tempDir();
    const first = makeKeys(dir);
    const error = thrown(() => makeKeys(dir));
    expect(error).toBeInstanceOf(KeysError);
    expect(error.message).toContain(join(dir, 'worker.key_secret'));
    expect(error.message).toContain('--force');
    expect(readCertificate(join(dir, 'worker.key')).publicKey).toBe(first.workerPublicKey);
    const second = makeKeys(dir, { force: true });
    expect(second.workerPublicKey).not.toBe(first.workerPublicKey);
    expect(readCertificate(join(dir, 'worker.key')).publicKey).toBe(second.workerPublicKey);
  });

  it('adds a client: its own folder with worker.key, authorized as NAME.key', () => {
    const dir = tempDir();
    const keys = makeKeys(dir);
    const laptop = addClient(dir, 'laptop');
    expect(laptop.clientDir).toBe(join(dir, 'clients', 'laptop'));
    expect(laptop.files.map((file) => file.slice(dir.length + 1))).toEqual([
      'clients/laptop/client.key',
      'clients/laptop/client.key_secret',
      'clients/laptop/worker.key',
      'authorized/laptop.key',
    ]);
    const client = loadClientKeys(laptop.clientDir);
    expect(client.serverPublicKey).toBe(keys.workerPublicKey);
    expect(client.publicKey).toBe(laptop.clientPublicKey);
    expect(
      loadWorkerKeys(dir)
        .authorized.map((c) => c.publicKey)
        .sort(),
    ).toEqual([keys.clientPublicKey, laptop.clientPublicKey].sort());
    if (posix) expect(mode(join(laptop.clientDir, 'client.key_secret'))).toBe(0o600);
    expect(thrown(() => addClient(dir, 'laptop')).message).toContain('--force');
    expect(thrown(() => addClient(dir, '../evil')).message).toMatch(/client name "..\/evil" is not usable/);
    expect(thrown(() => addClient(tempDir(), 'x')).message).toMatch(
      /holds no worker keys.*diffusion-lens keys/,
    );
  });
});

describe('reading keys', () => {
  it('knows a Z85 key', () => {
    const { publicKey, secretKey } = newKeyPair();
    expect(isZ85Key(publicKey)).toBe(true);
    expect(isZ85Key(secretKey)).toBe(true);
    expect(isZ85Key(publicKey.slice(1))).toBe(false);
    expect(isZ85Key(`${publicKey.slice(1)}"`)).toBe(false);
    expect(isZ85Key(`${publicKey.slice(1)} `)).toBe(false);
    // Five Z85 digits can exceed 32 bits: '#####' does.
    expect(isZ85Key(`#####${publicKey.slice(5)}`)).toBe(false);
  });

  it("derives a secret key's public key as libzmq does, and catches a pair that does not belong together", () => {
    for (let i = 0; i < 20; i++) {
      const pair = newKeyPair();
      expect(curvePublicKey(pair.secretKey)).toBe(pair.publicKey);
    }
    const file = join(tempDir(), 'worker.key_secret');
    writeFileSync(
      file,
      certificateText({ publicKey: newKeyPair().publicKey, secretKey: newKeyPair().secretKey }),
    );
    expect(thrown(() => readCertificate(file, { secret: true })).message).toMatch(
      /worker\.key_secret: its public-key is not the secret-key's/,
    );
  });

  it('names the file and the fix when a certificate is missing or bad', () => {
    const dir = tempDir();
    const missing = thrown(() => readCertificate(join(dir, 'worker.key'), { keysDir: 'KEYS' }));
    expect(missing).toBeInstanceOf(KeysError);
    expect(missing.message).toBe(
      `${join(dir, 'worker.key')} does not exist: run \`diffusion-lens keys KEYS\` to make them ` +
        '(see `diffusion-lens keys --help`)',
    );

    const short = join(dir, 'short.key');
    writeFileSync(short, 'metadata\ncurve\n    public-key = "abc"\n');
    expect(thrown(() => readCertificate(short)).message).toMatch(
      new RegExp(`^${short}, line 3: public-key is not a CURVE key \\(40 characters of Z85, got "abc"\\)`),
    );

    const empty = join(dir, 'empty.key');
    writeFileSync(empty, '# nothing\n');
    expect(thrown(() => readCertificate(empty)).message).toMatch(
      /empty\.key is not a CURVE certificate \(it has no public-key = "\.\.\." line\): run `diffusion-lens keys/,
    );

    const publicOnly = join(dir, 'client.key_secret');
    writeFileSync(publicOnly, certificateText({ publicKey: newKeyPair().publicKey }));
    expect(thrown(() => readCertificate(publicOnly, { secret: true })).message).toMatch(
      /client\.key_secret holds no secret key/,
    );
  });

  it('says what a client folder and a worker folder need', () => {
    const dir = tempDir();
    expect(thrown(() => loadClientKeys(join(dir, 'nope'))).message).toMatch(
      /the keys folder .*nope does not exist: run `diffusion-lens keys .*nope`/,
    );
    mkdirSync(join(dir, 'client'));
    expect(thrown(() => loadClientKeys(join(dir, 'client'))).message).toMatch(
      /client\.key_secret is missing: a client needs client\.key_secret and worker\.key/,
    );
    const keys = join(dir, 'keys');
    makeKeys(keys);
    expect(loadWorkerKeys(keys).authorized).toHaveLength(1);
    writeFileSync(join(keys, 'authorized', 'client.key'), 'garbage\n');
    expect(thrown(() => loadWorkerKeys(keys)).message).toMatch(
      /authorized\/client\.key is not a CURVE certificate/,
    );
    mkdirSync(join(dir, 'worker'));
    expect(thrown(() => loadWorkerKeys(join(dir, 'worker'))).message).toMatch(
      /worker\.key_secret is missing: a worker needs worker\.key_secret and authorized\//,
    );
    expect(
      thrown(() => resolveClientKeys({ serverPublicKey: 'x', publicKey: 'y', secretKey: 'z' })).message,
    ).toBe('keys.serverPublicKey is not a CURVE key (40 characters of Z85)');
  });
});

describe('pyzmq compatibility', () => {
  it('pyzmq loads the certificates we write', async () => {
    const dir = tempDir();
    const made = makeKeys(dir);
    addClient(dir, 'second');
    const script = `
import json, os, sys, zmq.auth
d = sys.argv[1]
out = {}
for name in ['worker.key', 'worker.key_secret', 'client.key', 'client.key_secret']:
    pub, sec = zmq.auth.load_certificate(os.path.join(d, name))
    out[name] = [pub.decode(), sec.decode() if sec else None]
out['authorized'] = sorted(k.decode() for k in zmq.auth.load_certificates(os.path.join(d, 'authorized')))
print(json.dumps(out))
`;
    const { stdout } = await execa(python, ['-c', script, dir], { cwd: pythonDir });
    const loaded = JSON.parse(stdout) as Record<string, unknown>;
    const worker = readCertificate(join(dir, 'worker.key_secret'), { secret: true });
    const client = readCertificate(join(dir, 'client.key_secret'), { secret: true });
    expect(loaded).toEqual({
      'worker.key': [made.workerPublicKey, null],
      'worker.key_secret': [made.workerPublicKey, worker.secretKey],
      'client.key': [made.clientPublicKey, null],
      'client.key_secret': [made.clientPublicKey, client.secretKey],
      authorized: loadWorkerKeys(dir)
        .authorized.map((c) => c.publicKey)
        .sort(),
    });
  });

  it('we read the certificates pyzmq writes', async () => {
    const dir = tempDir();
    const script = `
import json, sys, zmq.auth
pub_file, secret_file = zmq.auth.create_certificates(sys.argv[1], 'client')
print(json.dumps([k.decode() for k in zmq.auth.load_certificate(secret_file)]))
`;
    const { stdout } = await execa(python, ['-c', script, dir], { cwd: pythonDir });
    const [publicKey, secretKey] = JSON.parse(stdout) as [string, string];
    expect(readCertificate(join(dir, 'client.key_secret'), { secret: true })).toMatchObject({
      publicKey,
      secretKey,
    });
    expect(readCertificate(join(dir, 'client.key')).publicKey).toBe(publicKey);
  });
});

// A pyzmq ROUTER set up as the worker sets up CURVE (--keys DIR): its pair from DIR/worker.key_secret, a ZAP
// authenticator accepting DIR/authorized/*.key. It answers hello with a minimal ready, ping with pong; it
// prints its port, and exits when its stdin closes.
const CURVE_SERVER = `
import json, os, sys, threading, msgpack, zmq, zmq.auth
from zmq.auth.thread import ThreadAuthenticator
keys = sys.argv[1]
ctx = zmq.Context.instance()
sock = ctx.socket(zmq.ROUTER)
sock.linger = 0
if keys != '-':
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain='*', location=os.path.join(keys, 'authorized'))
    pub, sec = zmq.auth.load_certificate(os.path.join(keys, 'worker.key_secret'))
    sock.curve_publickey, sock.curve_secretkey, sock.curve_server = pub, sec, True
port = sock.bind_to_random_port('tcp://127.0.0.1')
print(json.dumps({'port': port}), flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
while True:
    ident, frame = sock.recv_multipart()
    msg = msgpack.unpackb(frame)
    if msg.get('type') == 'hello':
        reply = dict(type='ready', protocol=1, worker='curve-test', python='3', torch='0', diffusers='0',
                     transformers='0', device='cpu', families=[], heartbeat_s=1.0)
    else:
        reply = dict(type='pong', busy=False)
    sock.send_multipart([ident, msgpack.packb(dict(v=1, id=msg.get('id'), **reply))])
`;

describe('LensWorker.connect with CURVE keys', () => {
  const servers: ResultPromise[] = [];
  afterAll(() => {
    for (const server of servers) server.kill();
  });

  async function curveServer(keys: string | null): Promise<string> {
    const server = execa(python, ['-c', CURVE_SERVER, keys ?? '-'], {
      cwd: pythonDir,
      stdin: 'pipe',
      reject: false,
    });
    servers.push(server);
    const line = await new Promise<string>((resolve, reject) => {
      if (!server.stdout) return reject(new Error('no stdout'));
      createInterface({ input: server.stdout }).once('line', resolve);
      void server.then((result) => reject(new Error(`the CURVE server exited: ${result.stderr}`)));
    });
    return `tcp://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
  }

  async function refusal(connecting: Promise<LensWorker>): Promise<{ error: WorkerError; ms: number }> {
    const startedAt = performance.now();
    const error = await connecting.then(
      (worker) => {
        void worker.close();
        throw new Error('connected, but should have been refused');
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WorkerError);
    return { error: error as WorkerError, ms: performance.now() - startedAt };
  }

  const keysDir = tempDir();
  makeKeys(keysDir);

  it('connects with the right keys (a folder, or the keys themselves)', async () => {
    const endpoint = await curveServer(keysDir);
    for (const keys of [keysDir, loadClientKeys(keysDir)]) {
      const worker = await LensWorker.connect(endpoint, { keys, startTimeoutMs: 10_000 });
      expect(worker.info.worker).toBe('curve-test');
      expect(await worker.ping()).toBeGreaterThan(0);
      await worker.close();
    }
  });

  it('a client whose key is not authorized is refused at once', async () => {
    const endpoint = await curveServer(keysDir);
    const stranger = tempDir();
    makeKeys(stranger);
    // The stranger has the worker's public key, but its own pair is not in authorized/.
    writeFileSync(join(stranger, 'worker.key'), readFileSync(join(keysDir, 'worker.key')));
    const { error, ms } = await refusal(
      LensWorker.connect(endpoint, { keys: stranger, startTimeoutMs: 8_000 }),
    );
    expect(error.code).toBe('start_failed');
    expect(error.message).toContain(`the worker at ${endpoint} refused our key`);
    expect(error.message).toContain('do the keys match?');
    expect(error.message).toContain('DIR/authorized/');
    expect(ms).toBeLessThan(5_000);
  });

  it('a client without keys gets nothing, and is told to bring keys', async () => {
    const endpoint = await curveServer(keysDir);
    const { error, ms } = await refusal(LensWorker.connect(endpoint, { startTimeoutMs: 3_000 }));
    expect(error.message).toContain('do the keys match?');
    expect(error.message).toMatch(/--keys DIR \(or set DIFFUSION_LENS_KEYS\)/);
    expect(ms).toBeLessThan(5_000);
  });

  it("a client holding another worker's public key gets no answer within the timeout", async () => {
    const endpoint = await curveServer(keysDir);
    const wrongWorker = tempDir();
    makeKeys(wrongWorker);
    const mine = join(tempDir(), 'client');
    mkdirSync(mine);
    writeFileSync(join(mine, 'client.key_secret'), readFileSync(join(keysDir, 'client.key_secret')));
    writeFileSync(join(mine, 'worker.key'), readFileSync(join(wrongWorker, 'worker.key')));
    const { error, ms } = await refusal(LensWorker.connect(endpoint, { keys: mine, startTimeoutMs: 2_000 }));
    expect(error.message).toMatch(
      new RegExp(
        `^no answer from ${endpoint.replace(/\./g, '\\.')} within 2 s: is a worker running there, and do the keys match\\?`,
      ),
    );
    expect(ms).toBeGreaterThanOrEqual(1_900);
    expect(ms).toBeLessThan(5_000);
  });

  it('a client with keys and a worker without them do not match either', async () => {
    const endpoint = await curveServer(null);
    const { error } = await refusal(LensWorker.connect(endpoint, { keys: keysDir, startTimeoutMs: 3_000 }));
    expect(error.message).toContain('do the keys match?');
    // The keyless worker itself still answers a keyless client.
    const worker = await LensWorker.connect(endpoint);
    expect(worker.info.worker).toBe('curve-test');
    await worker.close();
  });

  it('names the keys folder when it cannot be used', async () => {
    const { error } = await refusal(
      LensWorker.connect('tcp://127.0.0.1:1', { keys: join(tempDir(), 'none'), startTimeoutMs: 1_000 }),
    );
    expect(error.message).toMatch(
      /^cannot connect to the worker at tcp:\/\/127\.0\.0\.1:1: the keys folder .*none does not exist: run `diffusion-lens keys/,
    );
  });
});
