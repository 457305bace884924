/**
 * `schedule(cron, handler)` on node-cron: 5-field (minute first) and 6-field (second first)
 * expressions. A run that is still going when the next tick comes makes that tick a no-op, so a slow
 * job never piles up copies of itself.
 */
import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import type { ScheduleEntry } from './register.js';

/** Returns why the expression is invalid, or `undefined` when node-cron accepts it. */
export function validateCronExpression(expression: unknown): string | undefined {
  if (typeof expression !== 'string' || expression.trim() === '') {
    return 'the cron expression must be a non-empty string like "*/15 * * * *"';
  }
  const result = cron.validateDetailed(expression);
  if (result.valid) return undefined;
  const reasons = result.errors.map((e) => e.message).join('; ');
  return `invalid cron expression (${reasons}); use 5 fields (minute hour day month weekday) or 6 (second first)`;
}

/**
 * Wraps a schedule handler so that overlapping runs are skipped and errors are logged with the
 * extension's name instead of escaping into node-cron.
 */
export function guardScheduleHandler(entry: ScheduleEntry, logger: Logger, active: () => boolean = () => true): () => Promise<void> {
  let running = false;
  return async () => {
    // Several bridges on one database: only the cluster's leader runs schedules (once per tick).
    if (!active()) return;
    if (running) {
      logger.warn({ extension: entry.extension, cron: entry.expression }, 'schedule skipped: the previous run is still going');
      return;
    }
    running = true;
    try {
      await entry.handler();
    } catch (error) {
      logger.error({ extension: entry.extension, cron: entry.expression, err: error }, 'schedule handler failed');
    } finally {
      running = false;
    }
  };
}

/** The cron tasks of one set of extensions; started and stopped together. */
export class ScheduleRunner {
  readonly #tasks: ScheduledTask[] = [];

  constructor(
    private readonly entries: readonly ScheduleEntry[],
    private readonly logger: Logger,
    /** Whether ticks run here now (false on a bridge that is not its cluster's leader). */
    private readonly active: () => boolean = () => true,
  ) {}

  start(): void {
    if (this.#tasks.length > 0) return;
    for (const [index, entry] of this.entries.entries()) {
      const run = guardScheduleHandler(entry, this.logger, this.active);
      const task = cron.createTask(entry.expression, run, {
        name: `${entry.extension}#${index}`,
        noOverlap: true,
        logger: cronLogger(this.logger.child({ extension: entry.extension, cron: entry.expression })),
      });
      void task.start();
      this.#tasks.push(task);
    }
  }

  async stop(): Promise<void> {
    const tasks = this.#tasks.splice(0);
    await Promise.all(tasks.map(async (task) => task.destroy()));
  }
}

function cronLogger(logger: Logger) {
  return {
    info: (message: string) => logger.debug(message),
    warn: (message: string) => logger.warn(message),
    error: (message: string | Error, err?: Error) => logger.error({ err: err ?? message }, String(message)),
    debug: (message: string | Error, err?: Error) => logger.debug({ err }, String(message)),
  };
}
