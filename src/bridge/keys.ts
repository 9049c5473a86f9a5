// ZeroMQ CURVE keys for remote workers, as certificate files in the layout `diffusion-lens keys DIR` makes
// and the Python worker reads (pyzmq's zmq.auth.load_certificate / configure_curve):
//
//   DIR/worker.key           the worker's public certificate
//   DIR/worker.key_secret    the worker's key pair (mode 0600): the worker host needs it
//   DIR/client.key           the client's public certificate
//   DIR/client.key_secret    the client's key pair (mode 0600): each client host needs it, and worker.key
//   DIR/authorized/*.key     the public certificates of the clients the worker answers
//   DIR/clients/NAME/        another client's folder (`--add-client NAME`): client.key, client.key_secret
//                            and a copy of worker.key, to copy whole to that client
//
// The files are czmq's ZPL certificates, as pyzmq writes them: a comment banner, `metadata`, and `curve`
// with `public-key = "<Z85>"` (and `secret-key = "<Z85>"` in a secret certificate).
import { createPrivateKey, createPublicKey } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { curveKeyPair } from 'zeromq';

export const WORKER_PUBLIC = 'worker.key';
export const WORKER_SECRET = 'worker.key_secret';
export const CLIENT_PUBLIC = 'client.key';
export const CLIENT_SECRET = 'client.key_secret';
export const AUTHORIZED_DIR = 'authorized';
export const CLIENTS_DIR = 'clients';

/** A CURVE key pair, each key 40 characters of Z85 (32 bytes). */
export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

/** What a client needs to talk to a worker that has CURVE keys. */
export interface CurveKeys {
  /** The worker's public key (worker.key). */
  serverPublicKey: string;
  /** This client's key pair (client.key_secret). */
  publicKey: string;
  secretKey: string;
}

/** One certificate file, read. */
export interface Certificate {
  file: string;
  publicKey: string;
  /** Null in a public certificate. */
  secretKey: string | null;
}

/** A keys folder or certificate that cannot be used; the message names the file and the fix. */
export class KeysError extends Error {
  override readonly name = 'KeysError';
}

const Z85_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Whether `text` is a CURVE key in Z85: 40 characters of its alphabet, each group of 5 a 32-bit value. */
export function isZ85Key(text: string): boolean {
  if (text.length !== 40) return false;
  for (let group = 0; group < 40; group += 5) {
    let value = 0;
    for (let i = group; i < group + 5; i++) {
      const digit = Z85_ALPHABET.indexOf(text.charAt(i));
      if (digit < 0) return false;
      value = value * 85 + digit;
    }
    if (value > 0xffffffff) return false;
  }
  return true;
}

function z85Decode(text: string): Buffer {
  const bytes = Buffer.alloc((text.length / 5) * 4);
  for (let group = 0; group < text.length / 5; group++) {
    let value = 0;
    for (let i = 0; i < 5; i++) value = value * 85 + Z85_ALPHABET.indexOf(text.charAt(group * 5 + i));
    bytes.writeUInt32BE(value, group * 4);
  }
  return bytes;
}

function z85Encode(bytes: Buffer): string {
  let text = '';
  for (let offset = 0; offset < bytes.length; offset += 4) {
    let value = bytes.readUInt32BE(offset);
    let group = '';
    for (let i = 0; i < 5; i++) {
      group = Z85_ALPHABET.charAt(value % 85) + group;
      value = Math.floor(value / 85);
    }
    text += group;
  }
  return text;
}

/** PKCS #8 DER of an X25519 private key, less its 32 key bytes. */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** The public key of a CURVE secret key (both Z85): X25519 of the secret and the base point. */
export function curvePublicKey(secretKey: string): string {
  const key = createPrivateKey({
    key: Buffer.concat([X25519_PKCS8_PREFIX, z85Decode(secretKey)]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return z85Encode(spki.subarray(spki.length - 32));
}

/** A fresh key pair (libzmq's zmq_curve_keypair, through zeromq.js). */
export function newKeyPair(): KeyPair {
  const { publicKey, secretKey } = curveKeyPair();
  return { publicKey, secretKey };
}

const PUBLIC_BANNER = [
  'ZeroMQ CURVE Public Certificate',
  'Exchange securely, or use a secure mechanism to verify the contents',
  'of this file after exchange. Store public certificates in your home',
  'directory, in the .curve subdirectory.',
];
const SECRET_BANNER = [
  'ZeroMQ CURVE **Secret** Certificate',
  'DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.',
];

/** The text of a certificate: public (`secretKey` left out) or secret (the whole pair). */
export function certificateText(
  pair: { publicKey: string; secretKey?: string | null },
  date: Date = new Date(),
): string {
  const secret = pair.secretKey !== undefined && pair.secretKey !== null;
  const banner = [
    `****  Generated on ${date.toISOString()} by diffusion-lens  ****`,
    ...(secret ? SECRET_BANNER : PUBLIC_BANNER),
  ];
  return (
    `${banner.map((line) => `#   ${line}`).join('\n')}\n\n` +
    'metadata\n' +
    'curve\n' +
    `    public-key = "${pair.publicKey}"\n` +
    (secret ? `    secret-key = "${pair.secretKey}"\n` : '')
  );
}

/** How to make keys, for error messages about a keys folder. */
function makeThem(dir: string): string {
  return `run \`diffusion-lens keys ${dir}\` to make them (see \`diffusion-lens keys --help\`)`;
}

/**
 * Reads a certificate file. With `secret`, it must hold a secret key too. Throws KeysError naming the
 * file when it is missing, unreadable, or holds no valid key.
 */
export function readCertificate(
  file: string,
  options: { secret?: boolean; keysDir?: string } = {},
): Certificate {
  const fix = makeThem(options.keysDir ?? '<dir>');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') throw new KeysError(`${file} does not exist: ${fix}`);
    throw new KeysError(`cannot read ${file}: ${(error as Error).message}`);
  }
  const keys: { 'public-key'?: string; 'secret-key'?: string } = {};
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^(public-key|secret-key)\s*=\s*(.*)$/.exec(line);
    if (!match) continue;
    const name = match[1] as 'public-key' | 'secret-key';
    const value = (match[2] ?? '').replace(/^["']|["']$/g, '');
    if (!isZ85Key(value)) {
      throw new KeysError(
        `${file}, line ${index + 1}: ${name} is not a CURVE key (40 characters of Z85, got ` +
          `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value)}); the file is damaged: ${fix}`,
      );
    }
    keys[name] ??= value;
  }
  if (keys['public-key'] === undefined) {
    throw new KeysError(`${file} is not a CURVE certificate (it has no public-key = "..." line): ${fix}`);
  }
  if (options.secret && keys['secret-key'] === undefined) {
    throw new KeysError(
      `${file} holds no secret key (a public certificate where a *.key_secret belongs?): ${fix}`,
    );
  }
  const secretKey = keys['secret-key'] ?? null;
  if (options.secret && secretKey !== null && curvePublicKey(secretKey) !== keys['public-key']) {
    throw new KeysError(`${file}: its public-key is not the secret-key's (the file was edited?): ${fix}`);
  }
  return { file, publicKey: keys['public-key'], secretKey };
}

/**
 * Writes `text` to `file` in one step (a temporary file renamed over it), with `mode` also when the file
 * was there before.
 */
function writeAtomically(file: string, text: string, mode: number): void {
  const temporary = `${file}.tmp-${process.pid}`;
  writeFileSync(temporary, text, { mode, flag: 'w' });
  chmodSync(temporary, mode);
  renameSync(temporary, file);
}

function writePair(dir: string, name: string, pair: KeyPair, date: Date): string[] {
  const publicFile = join(dir, `${name}.key`);
  const secretFile = join(dir, `${name}.key_secret`);
  writeAtomically(publicFile, certificateText({ publicKey: pair.publicKey }, date), 0o644);
  writeAtomically(secretFile, certificateText(pair, date), 0o600);
  return [publicFile, secretFile];
}

function refuseExisting(files: string[], what: string): void {
  const there = files.filter((file) => existsSync(file));
  if (there.length === 0) return;
  throw new KeysError(
    `${what} already exist${there.length === 1 ? 's' : ''}: ${there.join(', ')}. New keys lock out every ` +
      'worker and client that has the old ones; give --force to replace them.',
  );
}

/** What makeKeys or addClient wrote. */
export interface MadeKeys {
  dir: string;
  /** The files written, absolute. */
  files: string[];
  /** The worker's public key. */
  workerPublicKey: string;
  /** The new client's public key. */
  clientPublicKey: string;
  /** The folder a client host needs (client.key_secret and worker.key in it). */
  clientDir: string;
}

/**
 * Makes a worker key pair and a client key pair in `dir` (created, mode 0700, if missing) and authorizes
 * the client (DIR/authorized/client.key). Refuses to replace existing keys unless `force`.
 */
export function makeKeys(dirPath: string, options: { force?: boolean; date?: Date } = {}): MadeKeys {
  const dir = resolve(dirPath);
  const authorizedDir = join(dir, AUTHORIZED_DIR);
  const authorizedFile = join(authorizedDir, CLIENT_PUBLIC);
  if (!options.force) {
    refuseExisting(
      [WORKER_PUBLIC, WORKER_SECRET, CLIENT_PUBLIC, CLIENT_SECRET]
        .map((name) => join(dir, name))
        .concat(authorizedFile),
      'keys',
    );
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  mkdirSync(authorizedDir, { recursive: true, mode: 0o755 });
  const date = options.date ?? new Date();
  const worker = newKeyPair();
  const client = newKeyPair();
  const files = [...writePair(dir, 'worker', worker, date), ...writePair(dir, 'client', client, date)];
  writeAtomically(authorizedFile, certificateText({ publicKey: client.publicKey }, date), 0o644);
  files.push(authorizedFile);
  return {
    dir,
    files,
    workerPublicKey: worker.publicKey,
    clientPublicKey: client.publicKey,
    clientDir: dir,
  };
}

const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * Makes another client's key pair in DIR/clients/NAME/ (with a copy of worker.key: the folder a client
 * host needs) and authorizes it (DIR/authorized/NAME.key). DIR must hold keys already (makeKeys).
 */
export function addClient(
  dirPath: string,
  name: string,
  options: { force?: boolean; date?: Date } = {},
): MadeKeys {
  const dir = resolve(dirPath);
  if (!CLIENT_NAME.test(name)) {
    throw new KeysError(
      `client name ${JSON.stringify(name)} is not usable: letters, digits, '.', '_' and '-', starting with ` +
        'a letter or digit, at most 64 characters',
    );
  }
  const workerFile = join(dir, WORKER_PUBLIC);
  if (!existsSync(workerFile)) {
    throw new KeysError(`${dir} holds no worker keys (${workerFile} is missing): ${makeThem(dirPath)} first`);
  }
  const worker = readCertificate(workerFile, { keysDir: dirPath });
  const clientDir = join(dir, CLIENTS_DIR, name);
  const authorizedFile = join(dir, AUTHORIZED_DIR, `${name}.key`);
  if (!options.force) {
    refuseExisting(
      [join(clientDir, CLIENT_PUBLIC), join(clientDir, CLIENT_SECRET), authorizedFile],
      `keys of client ${JSON.stringify(name)}`,
    );
  }
  mkdirSync(clientDir, { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, AUTHORIZED_DIR), { recursive: true, mode: 0o755 });
  const date = options.date ?? new Date();
  const client = newKeyPair();
  const files = writePair(clientDir, 'client', client, date);
  const workerCopy = join(clientDir, WORKER_PUBLIC);
  writeAtomically(workerCopy, certificateText({ publicKey: worker.publicKey }, date), 0o644);
  writeAtomically(authorizedFile, certificateText({ publicKey: client.publicKey }, date), 0o644);
  files.push(workerCopy, authorizedFile);
  return { dir, files, workerPublicKey: worker.publicKey, clientPublicKey: client.publicKey, clientDir };
}

/**
 * The keys a client connects with, from a keys folder: its pair from DIR/client.key_secret and the
 * worker's public key from DIR/worker.key. Throws KeysError naming the missing or bad file.
 */
export function loadClientKeys(dirPath: string): CurveKeys {
  const dir = resolve(dirPath);
  if (!existsSync(dir)) {
    throw new KeysError(`the keys folder ${dir} does not exist: ${makeThem(dirPath)}`);
  }
  const forClient = (file: string): string =>
    `${file} is missing: a client needs ${CLIENT_SECRET} and ${WORKER_PUBLIC} in its keys folder (from ` +
    `the folder \`diffusion-lens keys DIR\` made; or run \`diffusion-lens keys DIR --add-client NAME\` and ` +
    `use DIR/${CLIENTS_DIR}/NAME)`;
  const secretFile = join(dir, CLIENT_SECRET);
  const workerFile = join(dir, WORKER_PUBLIC);
  for (const file of [secretFile, workerFile]) if (!existsSync(file)) throw new KeysError(forClient(file));
  const client = readCertificate(secretFile, { secret: true, keysDir: dirPath });
  const worker = readCertificate(workerFile, { keysDir: dirPath });
  return {
    serverPublicKey: worker.publicKey,
    publicKey: client.publicKey,
    secretKey: client.secretKey as string,
  };
}

/** What a worker started with `--keys DIR` will use, checked as the Python worker reads it. */
export interface WorkerKeys {
  dir: string;
  publicKey: string;
  /** The authorized clients' certificates (DIR/authorized/*.key). */
  authorized: Certificate[];
}

/**
 * Checks a worker's keys folder: DIR/worker.key_secret and at least one DIR/authorized/*.key. Throws
 * KeysError naming the missing or bad file.
 */
export function loadWorkerKeys(dirPath: string): WorkerKeys {
  const dir = resolve(dirPath);
  if (!existsSync(dir)) {
    throw new KeysError(`the keys folder ${dir} does not exist: ${makeThem(dirPath)}`);
  }
  const secretFile = join(dir, WORKER_SECRET);
  if (!existsSync(secretFile)) {
    throw new KeysError(
      `${secretFile} is missing: a worker needs ${WORKER_SECRET} and ${AUTHORIZED_DIR}/ in its keys ` +
        `folder (from the folder \`diffusion-lens keys DIR\` made); ${makeThem(dirPath)}`,
    );
  }
  const worker = readCertificate(secretFile, { secret: true, keysDir: dirPath });
  const authorizedDir = join(dir, AUTHORIZED_DIR);
  let names: string[] = [];
  try {
    names = readdirSync(authorizedDir)
      .filter((name) => name.endsWith('.key'))
      .sort();
  } catch {
    // Reported below as no authorized client.
  }
  if (names.length === 0) {
    throw new KeysError(
      `${authorizedDir} holds no client certificate (*.key): the worker would answer no one. Copy each ` +
        `client's ${CLIENT_PUBLIC} there, or run \`diffusion-lens keys ${dirPath} --add-client NAME\``,
    );
  }
  const authorized = names.map((name) => readCertificate(join(authorizedDir, name), { keysDir: dirPath }));
  return { dir, publicKey: worker.publicKey, authorized };
}

/** A client's keys given as a folder (loadClientKeys) or as keys; checks the keys either way. */
export function resolveClientKeys(keys: string | CurveKeys): CurveKeys {
  if (typeof keys === 'string') return loadClientKeys(keys);
  for (const [name, value] of Object.entries(keys)) {
    if (!isZ85Key(value as string)) {
      throw new KeysError(`keys.${name} is not a CURVE key (40 characters of Z85)`);
    }
  }
  return keys;
}
