// Directus 9 GA style with `schedule` (seed 002): node-cron expressions, 5 fields or 6 (seconds first).
import { defineHook } from '@directus/extensions-sdk';

export default defineHook(({ schedule, init }, { logger, env }) => {
  init('app.after', () => logger.info('heartbeat hook ready'));

  schedule(env.HEARTBEAT_CRON ?? '*/15 * * * *', () => {
    logger.info({ at: new Date().toISOString() }, 'another 15 minutes passed');
  });
});
