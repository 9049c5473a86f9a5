// Evaluation of a run folder: the per-image questions, human annotations, automatic scores and per-layer
// statistics.
export * from './annotations.js';
export * from './questions.js';
