// Evaluation of a run folder: the per-image questions, human annotations, automatic scores and per-layer
// statistics.

export * from './analysis.js';
export * from './annotations.js';
export * from './clip-texts.js';
export * from './labels.js';
export * from './paper-csv.js';
export * from './plots.js';
export * from './questions.js';
export * from './run-labels.js';
export * from './score.js';
export * from './scores.js';
export * from './stats.js';
export * from './stats-files.js';
