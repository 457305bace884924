/**
 * The floor of a filter over dblink, for the bench: a process that speaks just enough of the wire
 * protocol (the bridge's own WireServer) and answers every query at once with one row. No hook, no
 * signature, no ticket, no bounded wait. Prints its port, then serves until killed.
 */
import pino from 'pino';
import { commandTag, WireServer } from '../bridge/filters/wire-server.js';

const server = new WireServer({
  host: '127.0.0.1',
  port: 0,
  password: process.env['FLOOR_PASSWORD'] ?? '',
  logger: pino({ level: 'silent' }),
  // libpq's own set-up statements get a command tag; requests (`K <row>`) get one row.
  onQuery: async (query) => (query.startsWith('K ') ? { row: 'K' } : { command: commandTag(query) }),
});
const { port } = await server.listen();
process.stdout.write(`${port}\n`);
