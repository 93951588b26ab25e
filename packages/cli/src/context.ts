import type { Command } from 'commander';
import type { Kysely } from 'kysely';
import { type GlobalOptions, openDatabase, resolveSettings, type Settings } from './config.js';

/** The settings of the running command: its own flags, the program's, then the environment. */
export function settingsOf(command: Command): Settings {
  return resolveSettings(command.optsWithGlobals<GlobalOptions>());
}

/** Runs `work` with the database open, and closes it whatever happens. */
export async function withDatabase<T>(settings: Settings, work: (db: Kysely<unknown>) => Promise<T>): Promise<T> {
  const db = await openDatabase(settings);
  try {
    return await work(db);
  } finally {
    await db.destroy();
  }
}
