import type { HookConfig } from './types.js';

/**
 * Identity, like Directus' own: it exists so that TypeScript infers the register function's argument
 * types and so that extensions written for `@directus/extensions-sdk` load unchanged.
 */
export function defineHook(config: HookConfig): HookConfig {
  return config;
}
