// Directus 8 style (seed 004): `{ actions, filters }` with a Payload helper.
// Validates new articles before they are written, whatever client writes them.
import { randomUUID } from 'node:crypto';
import { exceptions } from 'hookbridge';

const { UnprocessableEntityException } = exceptions;

export default {
  filters: {
    'item.create.articles:before': function (payload) {
      if (payload.has('uuid')) {
        throw new UnprocessableEntityException('User are not allowed to set UUID');
      }

      const title = payload.get('title');
      if (!title || title.length < 10) {
        throw new UnprocessableEntityException('Article title is too short. Expecting at least 10 characters.');
      }

      if (/[^a-z0-9]/i.test(title)) {
        throw new UnprocessableEntityException('Article title has invalid characters. Only alphanumeric characters are allowed');
      }

      payload.set('uuid', randomUUID());

      return payload;
    },
  },
};
