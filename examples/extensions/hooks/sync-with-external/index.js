// Directus 9 RC style (seeds 000/001): the register function returns an event map, and a
// `.before` key is a blocking filter that receives the new items as an array.
// Syncs new recipes with an external service and cancels the insert when that fails.
// Set RECIPES_SYNC_URL to the service's URL; without it the hook lets recipes through unsynced.
module.exports = function registerHook({ exceptions, env, logger }) {
  const { ServiceUnavailableException } = exceptions;

  return {
    'items.create.recipes.before': async function (input) {
      const url = env.RECIPES_SYNC_URL;
      if (!url) {
        logger.debug('RECIPES_SYNC_URL is not set; recipe not synced');
        return input;
      }
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(input),
          signal: AbortSignal.timeout(2000),
        });
        if (!response.ok) throw new Error(`recipes service answered ${response.status}`);
      } catch (error) {
        throw new ServiceUnavailableException(error);
      }

      input[0].synced_with_example = true;

      return input;
    },
  };
};
