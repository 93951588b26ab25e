import { createInboxAdmin, type StoredKey } from '@inboxkit/core/admin';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { NotFoundError } from '../errors.js';
import { formatDate, printJson, printRecord } from '../output.js';

/** `inboxkit find <consumer> <id>`: the stored key. Exit code 1 when there is none. */
export function registerFind(program: Command): void {
  program
    .command('find')
    .description("a message's stored key: status, result, fingerprint, times")
    .argument('<consumer>', 'the inbox consumer name')
    .argument('<id>', 'the message id')
    .option('--json', 'print the key as JSON')
    .action(async (consumer: string, id: string, _flags: unknown, command: Command) => {
      const settings = settingsOf(command);
      const key = await withDatabase(settings, async (db) => {
        const admin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
        const found = await admin.find(consumer, id);
        if (found === undefined) {
          const known = await admin.hasConsumer(consumer);
          throw new NotFoundError(
            known
              ? `No key for message id ${JSON.stringify(id)} of consumer ${JSON.stringify(consumer)}.`
              : `No key for message id ${JSON.stringify(id)}: consumer ${JSON.stringify(consumer)} has no keys at all.`,
          );
        }
        return found;
      });
      if (settings.json) printJson(key);
      else printKey(key);
    });
}

export function printKey(key: StoredKey): void {
  printRecord([
    ['consumer', key.consumer],
    ['message id', key.messageId],
    ['status', key.status ?? '(no key: crash-loop attempts only)'],
    ['stored at', formatDate(key.processedAt)],
    ['fingerprint', key.fingerprint ?? '-'],
    ['result', key.result === undefined ? '-' : JSON.stringify(key.result)],
    ['crash-loop attempts', key.attempts === null ? '-' : String(key.attempts)],
    ['first attempt', formatDate(key.firstAttemptAt)],
    ['last attempt', formatDate(key.lastAttemptAt)],
  ]);
}
