// Command tags, ported from PostgreSQL's CreateCommandTag() (src/backend/tcop/utility.c) so the
// kind Scalple records is the one PostgreSQL reports in pg_stat_activity, event triggers and logs,
// and, for almost every statement, in the CommandComplete message. Differences with the wire tag
// (by design, in PostgreSQL too): CREATE TABLE AS / SELECT INTO complete as "SELECT n" on the wire;
// EXECUTE completes with the executed statement's tag; FETCH/MOVE/INSERT… carry row counts.
import type { Node } from './nodes.ts';
import { tagOf, payload, names } from './nodes.ts';
import type { ObjectType } from 'libpg-query';

function alterObjectTag(t: ObjectType | undefined): string {
  switch (t) {
    case 'OBJECT_AGGREGATE': return 'ALTER AGGREGATE';
    case 'OBJECT_ATTRIBUTE': return 'ALTER TYPE';
    case 'OBJECT_CAST': return 'ALTER CAST';
    case 'OBJECT_COLLATION': return 'ALTER COLLATION';
    case 'OBJECT_COLUMN': return 'ALTER TABLE';
    case 'OBJECT_CONVERSION': return 'ALTER CONVERSION';
    case 'OBJECT_DATABASE': return 'ALTER DATABASE';
    case 'OBJECT_DOMAIN':
    case 'OBJECT_DOMCONSTRAINT': return 'ALTER DOMAIN';
    case 'OBJECT_EXTENSION': return 'ALTER EXTENSION';
    case 'OBJECT_FDW': return 'ALTER FOREIGN DATA WRAPPER';
    case 'OBJECT_FOREIGN_SERVER': return 'ALTER SERVER';
    case 'OBJECT_FOREIGN_TABLE': return 'ALTER FOREIGN TABLE';
    case 'OBJECT_FUNCTION': return 'ALTER FUNCTION';
    case 'OBJECT_INDEX': return 'ALTER INDEX';
    case 'OBJECT_LANGUAGE': return 'ALTER LANGUAGE';
    case 'OBJECT_LARGEOBJECT': return 'ALTER LARGE OBJECT';
    case 'OBJECT_OPCLASS': return 'ALTER OPERATOR CLASS';
    case 'OBJECT_OPERATOR': return 'ALTER OPERATOR';
    case 'OBJECT_OPFAMILY': return 'ALTER OPERATOR FAMILY';
    case 'OBJECT_POLICY': return 'ALTER POLICY';
    case 'OBJECT_PROCEDURE': return 'ALTER PROCEDURE';
    case 'OBJECT_ROLE': return 'ALTER ROLE';
    case 'OBJECT_ROUTINE': return 'ALTER ROUTINE';
    case 'OBJECT_RULE': return 'ALTER RULE';
    case 'OBJECT_SCHEMA': return 'ALTER SCHEMA';
    case 'OBJECT_SEQUENCE': return 'ALTER SEQUENCE';
    case 'OBJECT_TABLE':
    case 'OBJECT_TABCONSTRAINT': return 'ALTER TABLE';
    case 'OBJECT_TABLESPACE': return 'ALTER TABLESPACE';
    case 'OBJECT_TRIGGER': return 'ALTER TRIGGER';
    case 'OBJECT_EVENT_TRIGGER': return 'ALTER EVENT TRIGGER';
    case 'OBJECT_TSCONFIGURATION': return 'ALTER TEXT SEARCH CONFIGURATION';
    case 'OBJECT_TSDICTIONARY': return 'ALTER TEXT SEARCH DICTIONARY';
    case 'OBJECT_TSPARSER': return 'ALTER TEXT SEARCH PARSER';
    case 'OBJECT_TSTEMPLATE': return 'ALTER TEXT SEARCH TEMPLATE';
    case 'OBJECT_TYPE': return 'ALTER TYPE';
    case 'OBJECT_VIEW': return 'ALTER VIEW';
    case 'OBJECT_MATVIEW': return 'ALTER MATERIALIZED VIEW';
    case 'OBJECT_PUBLICATION': return 'ALTER PUBLICATION';
    case 'OBJECT_SUBSCRIPTION': return 'ALTER SUBSCRIPTION';
    case 'OBJECT_STATISTIC_EXT': return 'ALTER STATISTICS';
    default: return '???';
  }
}

const DROP_TAGS: Partial<Record<ObjectType, string>> = {
  OBJECT_TABLE: 'DROP TABLE',
  OBJECT_SEQUENCE: 'DROP SEQUENCE',
  OBJECT_VIEW: 'DROP VIEW',
  OBJECT_MATVIEW: 'DROP MATERIALIZED VIEW',
  OBJECT_INDEX: 'DROP INDEX',
  OBJECT_TYPE: 'DROP TYPE',
  OBJECT_DOMAIN: 'DROP DOMAIN',
  OBJECT_COLLATION: 'DROP COLLATION',
  OBJECT_CONVERSION: 'DROP CONVERSION',
  OBJECT_SCHEMA: 'DROP SCHEMA',
  OBJECT_TSPARSER: 'DROP TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'DROP TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'DROP TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'DROP TEXT SEARCH CONFIGURATION',
  OBJECT_FOREIGN_TABLE: 'DROP FOREIGN TABLE',
  OBJECT_EXTENSION: 'DROP EXTENSION',
  OBJECT_FUNCTION: 'DROP FUNCTION',
  OBJECT_PROCEDURE: 'DROP PROCEDURE',
  OBJECT_ROUTINE: 'DROP ROUTINE',
  OBJECT_AGGREGATE: 'DROP AGGREGATE',
  OBJECT_OPERATOR: 'DROP OPERATOR',
  OBJECT_LANGUAGE: 'DROP LANGUAGE',
  OBJECT_CAST: 'DROP CAST',
  OBJECT_TRIGGER: 'DROP TRIGGER',
  OBJECT_EVENT_TRIGGER: 'DROP EVENT TRIGGER',
  OBJECT_RULE: 'DROP RULE',
  OBJECT_FDW: 'DROP FOREIGN DATA WRAPPER',
  OBJECT_FOREIGN_SERVER: 'DROP SERVER',
  OBJECT_OPCLASS: 'DROP OPERATOR CLASS',
  OBJECT_OPFAMILY: 'DROP OPERATOR FAMILY',
  OBJECT_POLICY: 'DROP POLICY',
  OBJECT_TRANSFORM: 'DROP TRANSFORM',
  OBJECT_ACCESS_METHOD: 'DROP ACCESS METHOD',
  OBJECT_PUBLICATION: 'DROP PUBLICATION',
  OBJECT_STATISTIC_EXT: 'DROP STATISTICS',
};

const DEFINE_TAGS: Partial<Record<ObjectType, string>> = {
  OBJECT_AGGREGATE: 'CREATE AGGREGATE',
  OBJECT_OPERATOR: 'CREATE OPERATOR',
  OBJECT_TYPE: 'CREATE TYPE',
  OBJECT_TSPARSER: 'CREATE TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'CREATE TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'CREATE TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'CREATE TEXT SEARCH CONFIGURATION',
  OBJECT_COLLATION: 'CREATE COLLATION',
  OBJECT_ACCESS_METHOD: 'CREATE ACCESS METHOD',
};

/** Statements whose tag does not depend on their fields. */
const SIMPLE_TAGS: Partial<Record<string, string>> = {
  InsertStmt: 'INSERT',
  DeleteStmt: 'DELETE',
  UpdateStmt: 'UPDATE',
  MergeStmt: 'MERGE',
  PLAssignStmt: 'SELECT',
  DeclareCursorStmt: 'DECLARE CURSOR',
  CreateDomainStmt: 'CREATE DOMAIN',
  CreateSchemaStmt: 'CREATE SCHEMA',
  CreateStmt: 'CREATE TABLE',
  CreateTableSpaceStmt: 'CREATE TABLESPACE',
  DropTableSpaceStmt: 'DROP TABLESPACE',
  AlterTableSpaceOptionsStmt: 'ALTER TABLESPACE',
  CreateExtensionStmt: 'CREATE EXTENSION',
  AlterExtensionStmt: 'ALTER EXTENSION',
  AlterExtensionContentsStmt: 'ALTER EXTENSION',
  CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER',
  AlterFdwStmt: 'ALTER FOREIGN DATA WRAPPER',
  CreateForeignServerStmt: 'CREATE SERVER',
  AlterForeignServerStmt: 'ALTER SERVER',
  CreateUserMappingStmt: 'CREATE USER MAPPING',
  AlterUserMappingStmt: 'ALTER USER MAPPING',
  DropUserMappingStmt: 'DROP USER MAPPING',
  CreateForeignTableStmt: 'CREATE FOREIGN TABLE',
  ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
  TruncateStmt: 'TRUNCATE TABLE',
  CommentStmt: 'COMMENT',
  SecLabelStmt: 'SECURITY LABEL',
  CopyStmt: 'COPY',
  AlterDomainStmt: 'ALTER DOMAIN',
  AlterDefaultPrivilegesStmt: 'ALTER DEFAULT PRIVILEGES',
  CompositeTypeStmt: 'CREATE TYPE',
  CreateEnumStmt: 'CREATE TYPE',
  CreateRangeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE',
  ViewStmt: 'CREATE VIEW',
  IndexStmt: 'CREATE INDEX',
  RuleStmt: 'CREATE RULE',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  DoStmt: 'DO',
  CreatedbStmt: 'CREATE DATABASE',
  AlterDatabaseStmt: 'ALTER DATABASE',
  AlterDatabaseRefreshCollStmt: 'ALTER DATABASE',
  AlterDatabaseSetStmt: 'ALTER DATABASE',
  DropdbStmt: 'DROP DATABASE',
  NotifyStmt: 'NOTIFY',
  ListenStmt: 'LISTEN',
  UnlistenStmt: 'UNLISTEN',
  LoadStmt: 'LOAD',
  CallStmt: 'CALL',
  ClusterStmt: 'CLUSTER',
  ExplainStmt: 'EXPLAIN',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  AlterSystemStmt: 'ALTER SYSTEM',
  VariableShowStmt: 'SHOW',
  CreateTransformStmt: 'CREATE TRANSFORM',
  CreateTrigStmt: 'CREATE TRIGGER',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER',
  AlterEventTrigStmt: 'ALTER EVENT TRIGGER',
  CreatePLangStmt: 'CREATE LANGUAGE',
  CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE',
  AlterRoleSetStmt: 'ALTER ROLE',
  DropRoleStmt: 'DROP ROLE',
  DropOwnedStmt: 'DROP OWNED',
  ReassignOwnedStmt: 'REASSIGN OWNED',
  LockStmt: 'LOCK TABLE',
  ConstraintsSetStmt: 'SET CONSTRAINTS',
  CheckPointStmt: 'CHECKPOINT',
  ReindexStmt: 'REINDEX',
  CreateConversionStmt: 'CREATE CONVERSION',
  CreateCastStmt: 'CREATE CAST',
  CreateOpClassStmt: 'CREATE OPERATOR CLASS',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY',
  AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY',
  AlterOperatorStmt: 'ALTER OPERATOR',
  AlterTypeStmt: 'ALTER TYPE',
  AlterTSDictionaryStmt: 'ALTER TEXT SEARCH DICTIONARY',
  AlterTSConfigurationStmt: 'ALTER TEXT SEARCH CONFIGURATION',
  CreatePolicyStmt: 'CREATE POLICY',
  AlterPolicyStmt: 'ALTER POLICY',
  CreateAmStmt: 'CREATE ACCESS METHOD',
  CreatePublicationStmt: 'CREATE PUBLICATION',
  AlterPublicationStmt: 'ALTER PUBLICATION',
  CreateSubscriptionStmt: 'CREATE SUBSCRIPTION',
  AlterSubscriptionStmt: 'ALTER SUBSCRIPTION',
  DropSubscriptionStmt: 'DROP SUBSCRIPTION',
  AlterCollationStmt: 'ALTER COLLATION',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  CreateStatsStmt: 'CREATE STATISTICS',
  AlterStatsStmt: 'ALTER STATISTICS',
};

/** The command tag of one raw statement, as PostgreSQL's CreateCommandTag() computes it ('???' when unknown). */
export function commandTag(stmt: Node): string {
  const tag = tagOf(stmt);
  if (!tag) return '???';
  const simple = SIMPLE_TAGS[tag];
  if (simple) return simple;
  switch (tag) {
    case 'SelectStmt':
      // Raw SELECT … INTO becomes CREATE TABLE AS (is_select_into) during analysis.
      return payload(stmt, 'SelectStmt').intoClause ? 'SELECT INTO' : 'SELECT';
    case 'TransactionStmt':
      switch (payload(stmt, 'TransactionStmt').kind) {
        case 'TRANS_STMT_BEGIN': return 'BEGIN';
        case 'TRANS_STMT_START': return 'START TRANSACTION';
        case 'TRANS_STMT_COMMIT': return 'COMMIT';
        case 'TRANS_STMT_ROLLBACK':
        case 'TRANS_STMT_ROLLBACK_TO': return 'ROLLBACK';
        case 'TRANS_STMT_SAVEPOINT': return 'SAVEPOINT';
        case 'TRANS_STMT_RELEASE': return 'RELEASE';
        case 'TRANS_STMT_PREPARE': return 'PREPARE TRANSACTION';
        case 'TRANS_STMT_COMMIT_PREPARED': return 'COMMIT PREPARED';
        case 'TRANS_STMT_ROLLBACK_PREPARED': return 'ROLLBACK PREPARED';
        default: return '???';
      }
    case 'ClosePortalStmt':
      return payload(stmt, 'ClosePortalStmt').portalname ? 'CLOSE CURSOR' : 'CLOSE CURSOR ALL';
    case 'FetchStmt':
      return payload(stmt, 'FetchStmt').ismove ? 'MOVE' : 'FETCH';
    case 'DropStmt':
      return DROP_TAGS[payload(stmt, 'DropStmt').removeType ?? 'OBJECT_TABLE'] ?? '???';
    case 'RenameStmt': {
      const r = payload(stmt, 'RenameStmt');
      return alterObjectTag(r.renameType === 'OBJECT_COLUMN' ? r.relationType : r.renameType);
    }
    case 'AlterObjectDependsStmt':
      return alterObjectTag(payload(stmt, 'AlterObjectDependsStmt').objectType);
    case 'AlterObjectSchemaStmt':
      return alterObjectTag(payload(stmt, 'AlterObjectSchemaStmt').objectType);
    case 'AlterOwnerStmt':
      return alterObjectTag(payload(stmt, 'AlterOwnerStmt').objectType);
    case 'AlterTableMoveAllStmt':
      return alterObjectTag(payload(stmt, 'AlterTableMoveAllStmt').objtype);
    case 'AlterTableStmt':
      return alterObjectTag(payload(stmt, 'AlterTableStmt').objtype);
    case 'AlterFunctionStmt': {
      const t = payload(stmt, 'AlterFunctionStmt').objtype;
      return t === 'OBJECT_PROCEDURE' ? 'ALTER PROCEDURE' : t === 'OBJECT_ROUTINE' ? 'ALTER ROUTINE' : t === 'OBJECT_FUNCTION' ? 'ALTER FUNCTION' : '???';
    }
    case 'GrantStmt':
      return payload(stmt, 'GrantStmt').is_grant ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt':
      return payload(stmt, 'GrantRoleStmt').is_grant ? 'GRANT ROLE' : 'REVOKE ROLE';
    case 'DefineStmt':
      return DEFINE_TAGS[payload(stmt, 'DefineStmt').kind ?? 'OBJECT_TYPE'] ?? '???';
    case 'CreateFunctionStmt':
      return payload(stmt, 'CreateFunctionStmt').is_procedure ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'VacuumStmt':
      return payload(stmt, 'VacuumStmt').is_vacuumcmd ? 'VACUUM' : 'ANALYZE';
    case 'CreateTableAsStmt': {
      const c = payload(stmt, 'CreateTableAsStmt');
      if (c.objtype === 'OBJECT_MATVIEW') return 'CREATE MATERIALIZED VIEW';
      return c.is_select_into ? 'SELECT INTO' : 'CREATE TABLE AS';
    }
    case 'VariableSetStmt': {
      const k = payload(stmt, 'VariableSetStmt').kind;
      return k === 'VAR_RESET' || k === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    }
    case 'DiscardStmt':
      switch (payload(stmt, 'DiscardStmt').target) {
        case 'DISCARD_PLANS': return 'DISCARD PLANS';
        case 'DISCARD_TEMP': return 'DISCARD TEMP';
        case 'DISCARD_SEQUENCES': return 'DISCARD SEQUENCES';
        default: return 'DISCARD ALL';
      }
    case 'DeallocateStmt':
      // PostgreSQL 18's grammar marks DEALLOCATE ALL with isall; older trees leave name unset.
      return payload(stmt, 'DeallocateStmt').name ? 'DEALLOCATE' : 'DEALLOCATE ALL';
    default:
      return '???';
  }
}

/**
 * Statements PostgreSQL's GetCommandLogLevel() classes as DDL (log_statement = ddl): they change
 * the catalog, so a catalog cache must be refreshed after they complete (and again when their
 * transaction ends). EXPLAIN ANALYZE and PREPARE are looked through, as PostgreSQL does.
 */
export function isDdl(stmt: Node): boolean {
  const tag = tagOf(stmt);
  if (!tag) return false;
  switch (tag) {
    case 'SelectStmt':
      return payload(stmt, 'SelectStmt').intoClause !== undefined;
    case 'InsertStmt':
    case 'DeleteStmt':
    case 'UpdateStmt':
    case 'MergeStmt':
    case 'PLAssignStmt':
    case 'TransactionStmt':
    case 'DeclareCursorStmt':
    case 'ClosePortalStmt':
    case 'FetchStmt':
    case 'TruncateStmt':
    case 'CopyStmt':
    case 'ExecuteStmt':
    case 'DeallocateStmt':
    case 'DoStmt':
    case 'NotifyStmt':
    case 'ListenStmt':
    case 'UnlistenStmt':
    case 'LoadStmt':
    case 'CallStmt':
    case 'VacuumStmt':
    case 'VariableSetStmt':
    case 'VariableShowStmt':
    case 'DiscardStmt':
    case 'LockStmt':
    case 'ConstraintsSetStmt':
    case 'CheckPointStmt':
    case 'ReindexStmt':
      return false;
    case 'PrepareStmt': {
      const q = payload(stmt, 'PrepareStmt').query;
      return q ? isDdl(q) : false;
    }
    case 'ExplainStmt': {
      const e = payload(stmt, 'ExplainStmt');
      return e.query !== undefined && explainAnalyze(e.options) && isDdl(e.query);
    }
    default:
      return SIMPLE_TAGS[tag] !== undefined || commandTag(stmt) !== '???';
  }
}

/** Whether EXPLAIN's options turn ANALYZE on (the last `analyze` option wins, as in explain.c). */
export function explainAnalyze(options: readonly Node[] | undefined): boolean {
  let analyze = false;
  for (const o of options ?? []) {
    const d = tagOf(o) === 'DefElem' ? payload(o, 'DefElem') : undefined;
    if (!d || d.defname !== 'analyze') continue;
    analyze = defBoolean(d.arg);
  }
  return analyze;
}

/** defGetBoolean(): no argument means true; 'true'/'on'/1 etc. */
export function defBoolean(arg: Node | undefined): boolean {
  if (arg === undefined) return true;
  const t = tagOf(arg);
  if (t === 'A_Const') {
    const c = payload(arg, 'A_Const');
    if (c.ival) return (c.ival.ival ?? 0) !== 0;
    if (c.boolval) return c.boolval.boolval === true;
    if (c.sval) return /^(true|on|yes|1)$/i.test(c.sval.sval ?? '');
  }
  if (t === 'Boolean') return payload(arg, 'Boolean').boolval === true;
  if (t === 'Integer') return (payload(arg, 'Integer').ival ?? 0) !== 0;
  if (t === 'String') return /^(true|on|yes|1)$/i.test(payload(arg, 'String').sval ?? '');
  return true;
}

/** Qualified name parts of a DropStmt object (List of String), for table-like drops. */
export function dropObjectNames(obj: Node): string[] {
  const l = tagOf(obj) === 'List' ? payload(obj, 'List') : undefined;
  return l ? names(l.items) : [];
}
