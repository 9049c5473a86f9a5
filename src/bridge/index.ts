// The bridge's public surface: the worker handle, its errors, and the protocol types.
export { BRIDGE_ERROR_CODES, WORKER_ERROR_CODES, WorkerError, type WorkerErrorCode } from './errors.js';
export type { GenerateHandlers } from './generate-call.js';
export type { ExitInfo } from './process.js';
export {
  type DoneMessage,
  type EncoderInfo,
  type ErrorMessage,
  type FamilyCapabilities,
  type FamilyOptions,
  type FamilyOptionsKind,
  type GenerateItem,
  type GenerateRequest,
  generateRequestSchema,
  type ImageMessage,
  type LoadedMessage,
  type LoadedStage2,
  type LoadRequest,
  loadedMessageSchema,
  loadRequestSchema,
  OFFLOAD_MODES,
  type OffloadMode,
  PROTOCOL_ERROR_CODES,
  PROTOCOL_SCHEMA_PATH,
  PROTOCOL_VERSION,
  type ProgressMessage,
  type ProtocolErrorCode,
  protocolJsonSchema,
  type ReadyMessage,
  readyMessageSchema,
  SCORER_KINDS,
  type ScoreAnswer,
  type ScoreDoneMessage,
  type ScoredMessage,
  type ScoreItem,
  type ScoreQuestion,
  type ScoreRequest,
  type ScorerKind,
  type ScorerSpec,
  type Stage2Generate,
  type Stage2Load,
  scoreRequestSchema,
} from './protocol.js';
export { findPython, packageRoot, pythonDir } from './python.js';
export type { ScoreHandlers } from './score-call.js';
export {
  type ConnectOptions,
  connectWorker,
  LensWorker,
  type WorkerOptions,
} from './worker.js';
