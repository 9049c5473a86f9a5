// The JSON Schema that the Python worker validates against is generated from the zod schemas in
// src/bridge/protocol.ts; the committed copy must be what they generate now (`npm run protocol-schema`).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../src/bridge/index.js';
import {
  BINARY_KEYWORD,
  incomingMessageSchema,
  outgoingMessageSchema,
  PROTOCOL_SCHEMA_PATH,
  PROTOCOL_VERSION,
  protocolJsonSchema,
  protocolJsonSchemaText,
} from '../src/bridge/protocol.js';

type JsonSchema = {
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: unknown;
  anyOf?: JsonSchema[];
  items?: JsonSchema;
  [key: string]: unknown;
};

/** Every object schema inside `schema`, with where it is. */
function objects(schema: JsonSchema, at: string, out: Array<[string, JsonSchema]> = []) {
  if (schema.type === 'object') out.push([at, schema]);
  for (const [key, inner] of Object.entries(schema.properties ?? {})) objects(inner, `${at}.${key}`, out);
  for (const inner of schema.anyOf ?? []) objects(inner, at, out);
  if (schema.items) objects(schema.items, `${at}[]`, out);
  return out;
}

describe('protocol.schema.json', () => {
  it('is what the zod schemas generate (else run `npm run protocol-schema`)', () => {
    const committed = readFileSync(join(packageRoot, PROTOCOL_SCHEMA_PATH), 'utf8');
    expect(committed, 'stale: run `npm run protocol-schema` and commit the file').toBe(
      protocolJsonSchemaText(),
    );
  });

  it('has one schema per message type, both directions', () => {
    const schema = protocolJsonSchema() as {
      protocol: number;
      requests: Record<string, JsonSchema>;
      replies: Record<string, JsonSchema>;
    };
    expect(schema.protocol).toBe(PROTOCOL_VERSION);
    expect(Object.keys(schema.requests)).toEqual(
      outgoingMessageSchema.options.map((o) => o.shape.type.value),
    );
    expect(Object.keys(schema.replies)).toEqual(incomingMessageSchema.options.map((o) => o.shape.type.value));
    expect(Object.keys(schema.replies).sort()).toEqual(
      [
        'ack',
        'bye',
        'done',
        'error',
        'heartbeat',
        'image',
        'loaded',
        'pong',
        'progress',
        'ready',
        'score_done',
        'scored',
      ].sort(),
    );
    expect(schema.requests.score?.properties?.items).toMatchObject({
      items: { properties: { png: { [BINARY_KEYWORD]: true } } },
    });
    expect(schema.replies.ack?.required).toContain('target');
    expect(schema.replies.pong?.required).toContain('busy');
    expect(schema.replies.heartbeat?.required).toContain('busy');
    expect(schema.replies.image?.properties?.png).toMatchObject({ [BINARY_KEYWORD]: true });
  });

  it("closes every object but the lens record, whose extra keys are strings, and the family's maps", () => {
    const schema = protocolJsonSchema() as Record<string, Record<string, JsonSchema>>;
    // What a family checks itself: its options, and the JSON Schemas it reports of them.
    const open = /(^|\.)family_options$|\.options\.(load|sample|stage2)$/;
    for (const group of ['requests', 'replies'] as const) {
      for (const [type, message] of Object.entries(schema[group] ?? {})) {
        for (const [at, object] of objects(message, type)) {
          if (open.test(at)) {
            expect(object.additionalProperties, at).toEqual({});
            continue;
          }
          const expected = at === 'loaded.lens' ? { type: 'string' } : false;
          expect(object.additionalProperties, at).toEqual(expected);
          expect(object.required?.sort(), at).toEqual(Object.keys(object.properties ?? {}).sort());
        }
      }
    }
  });

  it('bounds what the worker bounds', () => {
    const { requests } = protocolJsonSchema() as { requests: Record<string, JsonSchema> };
    const generate = requests.generate?.properties ?? {};
    expect(generate.prompts).toMatchObject({ type: 'array', minItems: 1 });
    expect(generate.items).toMatchObject({ type: 'array', minItems: 1 });
    expect(generate.items?.items?.properties?.seed).toMatchObject({ type: 'integer', minimum: 0 });
    expect(generate.guidance).toMatchObject({ type: 'number', minimum: 0, maximum: 100 });
    expect(generate.height).toMatchObject({ type: 'integer', exclusiveMinimum: 0, multipleOf: 8 });
    expect(generate.width).toMatchObject({ type: 'integer', exclusiveMinimum: 0, multipleOf: 8 });
  });
});
