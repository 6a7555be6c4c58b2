// node-postgres' SCRAM-SHA-256 client (CommonJS, untyped); we reuse it for the upstream login.
declare module 'pg/lib/crypto/sasl.js' {
  export interface SaslSession {
    mechanism: string;
    clientNonce: string;
    response: string;
    message: string;
  }
  export function startSession(mechanisms: string[], stream?: unknown): SaslSession;
  export function continueSession(session: SaslSession, password: string, serverData: string, stream?: unknown): Promise<void>;
  export function finalizeSession(session: SaslSession, serverData: string): void;
  const sasl: { startSession: typeof startSession; continueSession: typeof continueSession; finalizeSession: typeof finalizeSession };
  export default sasl;
}
