// Directus 9 GA style (seed 002): `registerHook({ action }, { logger })`.
// Runs after each committed insert into any table.
module.exports = function registerHook({ action }, { logger }) {
  action('items.create', ({ collection, key, payload }, { accountability }) => {
    logger.info({ collection, key, payload, role: accountability?.role }, 'item created');
  });
};
