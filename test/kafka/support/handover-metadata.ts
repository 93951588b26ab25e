// The offset-commit metadata the Kafka consumer writes: internal to @inboxkit/kafka, read
// here from its source so that the tests check the very values it commits.
export { CLEAN_METADATA, RUNNING_METADATA } from '../../../packages/kafka/src/internal/handover.ts';
