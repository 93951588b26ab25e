/**
 * `@inboxkit/core/pg`: node-postgres helpers. A separate entry point, so that core itself
 * never loads pg (it is an optional peer dependency).
 *
 * @module @inboxkit/core/pg
 */
export { createPgKysely, createPgPool, type PgPoolOptions } from './pg-pool.js';
