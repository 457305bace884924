/**
 * hookbridge's public surface, and nothing else: what hook authors import (also what `hookbridge`,
 * `@directus/extensions-sdk` and `@directus/errors` resolve to inside an extension), and what a Node
 * program needs to run a bridge of its own (README, "Use it in your own project"). The testing helper
 * is `hookbridge/testing`. test/integration/public-api.test.ts lists these names: a new export is a
 * decision, not an accident.
 */
export * from './hooks/sdk.js';
export { Bridge } from './bridge/bridge.js';
export { resolveConfig, ConfigError, type Config, type ConfigOptions, type FilterFailureMode } from './bridge/config.js';
export { createLogger } from './bridge/logger.js';
