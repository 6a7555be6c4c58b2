// The audit store's public surface: what the proxy and the CLI import.
export { openAuditStore, chainLockKey, stderrLogger } from './writer.ts';
export type { AuditStore, AuditStoreOptions, AuditStats, AuditLogger, RevokeInput } from './writer.ts';
export { migrate, initAuditSchema, schemaState, grantWriter, listPartitions, LATEST_VERSION, MIGRATIONS } from './schema.ts';
export type { MigrateResult, SchemaState, InitResult, PartitionInfo } from './schema.ts';
export { verify, headLines } from './verify.ts';
export type { VerifyReport, VerifyOptions, VerifyProblem, ChainReport, ProblemKind } from './verify.ts';
export { applyRetention, parseDay, ADMIN_CHAIN } from './retention.ts';
export type { RetentionOptions, RetentionResult } from './retention.ts';
export { searchLog, parseTime } from './search.ts';
export type { LogEntry, LogFilter } from './search.ts';
export { checkpointPathFor, checkpointFilesNear, readCheckpoint } from './checkpoint.ts';
export { canonical, chainHash, deriveKeys, hashRow, GENESIS_HASH } from './chain.ts';
export type * from './record.ts';
