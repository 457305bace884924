/**
 * hookbridge's public surface: the hook author's API (also reachable as `hookbridge` from inside an
 * extension) and the programmatic bridge.
 */
export * from './hooks/sdk.js';
export { Bridge } from './bridge/bridge.js';
export { resolveConfig, ConfigError, type Config, type ConfigOptions, type FilterFailureMode } from './bridge/config.js';
export { createLogger } from './bridge/logger.js';
export { HookRuntime, type HookRuntimeOptions, type LoadReport } from './hooks/runtime.js';
export { FilterRejection } from './hooks/filter-chain.js';
export type { ActionFailure } from './hooks/action-dispatch.js';
