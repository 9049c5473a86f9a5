// Where the package's own files are, from either src/ or dist/.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (the folder holding package.json). */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The embedded default model: the tiny "shapes" model trained by the project (models/shapes). */
export const EMBEDDED_MODEL_DIR = join(packageRoot, 'models', 'shapes');
