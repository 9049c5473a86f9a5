// The local report server with annotation mode (`diffusion-lens serve`).
export { AnnotationService, annotationOrder } from './annotation.js';
export { HttpError } from './errors.js';
export { annotatorCsvFiles } from './export.js';
export { resolveInside, SERVED_TYPES, safeSegments } from './paths.js';
export {
  DEFAULT_HOST,
  isLoopback,
  type ReportServer,
  type ServeOptions,
  startReportServer,
} from './server.js';
