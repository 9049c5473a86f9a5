#!/usr/bin/env node
// Writes python/diffusion_lens/protocol.schema.json, the JSON Schema of worker protocol v1, from the zod
// schemas in src/bridge/protocol.ts (through the build in dist/: run by `npm run protocol-schema`, which
// builds first). test/protocol-schema.test.ts fails while the committed file is stale.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROTOCOL_SCHEMA_PATH, protocolJsonSchemaText } from '../dist/bridge/protocol.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, PROTOCOL_SCHEMA_PATH);
writeFileSync(target, protocolJsonSchemaText());
console.log(`wrote ${PROTOCOL_SCHEMA_PATH}`);
