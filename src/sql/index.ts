// Statement analysis for the proxy: the real PostgreSQL parser, a live catalog cache, and access
// resolution (tables and columns read or written). See each module for details.
export { ensureParser, parserReady, parse, tryParse, fingerprint, SqlSyntaxError, setParseCacheSize, parseCacheStats } from './parser.ts';
export { analyse, analyseUncached, setAnalysisCacheSize, parseSearchPath, figureColname } from './analyse.ts';
export type {
  Analysis,
  AnalysisOk,
  AnalysisError,
  StatementInfo,
  RelationRef,
  RelationAccess,
  ColumnRefInfo,
  ColumnRefForm,
  FunctionRef,
  CteDef,
  FromItem,
  OutputColumn,
  QueryScope,
  ScopeKind,
  ColumnAccess,
  DataFlow,
  ScalpleSetting,
  VariableSetting,
  SetAction,
  SessionState,
  SessionStateKind,
  TransactionControl,
  TransactionOp,
  CommandDetail,
  EqualityUse,
} from './analyse.ts';
export { Catalog, CatalogSnapshot, DEFAULT_SEARCH_PATH, CATALOG_QUERY, snapshotFromRow } from './catalog.ts';
export type { Queryable, CatalogRelation, CatalogColumn, RelKind, RelKindCode, EffectivePath, CatalogOptions } from './catalog.ts';
export { resolveAccess, viewLineage, columnSources } from './resolve.ts';
export type { Access, StatementAccess, OutputLineage, ColumnFlow, ViewLineage, SearchPathInput, Equality, EqualityOperand } from './resolve.ts';
export { commandTag, isDdl } from './commandTag.ts';
