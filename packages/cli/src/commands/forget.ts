import { createInboxAdmin } from '@inboxkit/core/admin';
import type { Command } from 'commander';
import { confirm } from '../confirm.js';
import { settingsOf, withDatabase } from '../context.js';
import { CliError, NotFoundError } from '../errors.js';
import { printJson, printLine, printTable } from '../output.js';

/**
 * `inboxkit forget <consumer> <id>...`: deletes keys (and their crash-loop attempts) so the
 * messages may run again. All ids must be stored, or nothing is deleted; asks first.
 */
export function registerForget(program: Command): void {
  program
    .command('forget')
    .description('delete keys so their messages run again when redelivered (asks first)')
    .argument('<consumer>', 'the inbox consumer name')
    .argument('<ids...>', 'message ids')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'print what was deleted as JSON')
    .action(async (consumer: string, ids: string[], flags: { yes?: boolean }, command: Command) => {
      const settings = settingsOf(command);
      const unique = [...new Set(ids)];
      await withDatabase(settings, async (db) => {
        const admin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
        const keys = await admin.read(consumer, unique);
        const missing = unique.filter((id) => !keys.has(id));
        if (missing.length > 0) {
          const known = keys.size > 0 || (await admin.hasConsumer(consumer));
          throw new NotFoundError(
            known
              ? `No key for ${missing.map((id) => JSON.stringify(id)).join(', ')} of consumer ${JSON.stringify(consumer)}; nothing was deleted.`
              : `Consumer ${JSON.stringify(consumer)} has no keys; nothing was deleted.`,
          );
        }
        if (!settings.json) {
          printTable(
            ['message id', 'status', 'stored at'],
            unique.map((id) => {
              const key = keys.get(id);
              return [id, key?.status ?? 'attempts only', key?.processedAt?.toISOString() ?? '-'];
            }),
          );
        }
        const processed = unique.filter((id) => keys.get(id)?.status === 'processed').length;
        const warning = processed > 0 ? ` ${processed} of them processed: their effects may happen again.` : '';
        const ok = await confirm(
          `Forgetting ${unique.length} key(s) of consumer ${JSON.stringify(consumer)}`,
          `Forget ${unique.length} key(s) of consumer ${JSON.stringify(consumer)}?${warning}`,
          flags.yes,
        );
        if (!ok) throw new CliError('INBOXKIT_CLI_DECLINED', 'Not confirmed; nothing was deleted.');
        const result = await admin.forget(consumer, unique);
        if (settings.json) printJson({ consumer, forgotten: result.keys, attemptsCleared: result.attempts });
        else printLine(`Forgot ${result.keys.length} key(s) of consumer ${consumer}.`);
      });
    });
}
