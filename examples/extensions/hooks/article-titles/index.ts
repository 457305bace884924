// Directus 10 style (seed 003): TypeScript, no build step, `defineHook` and Directus errors.
import { defineHook } from '@directus/extensions-sdk';
import { InvalidPayloadError } from '@directus/errors';

type ArticleUpdate = { title?: string | null };

export default defineHook(({ filter }) => {
  filter<ArticleUpdate>('articles.items.update', (payload, meta) => {
    if (payload.title !== undefined && (payload.title === null || payload.title.trim() === '')) {
      throw new InvalidPayloadError({ reason: `Article title cannot be empty (keys ${meta['keys'].join(', ')})` });
    }
    return payload;
  });
});
