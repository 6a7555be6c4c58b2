// Counters and a latency histogram for /metrics (Prometheus text format). Plain numbers: cheap
// enough for the hot path.

const BUCKETS_MS = [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

export class Metrics {
  private sessionsOpened = 0;
  private sessionsOpen = 0;
  private authFailures = 0;
  private statements = 0;
  private statementErrors = 0;
  private denials = 0;
  private auditRefusals = 0;
  private readonly buckets = new Array<number>(BUCKETS_MS.length + 1).fill(0);
  private durationSum = 0;

  sessionOpened(): void {
    this.sessionsOpened++;
    this.sessionsOpen++;
  }
  sessionClosed(): void {
    this.sessionsOpen--;
  }
  authFailed(): void {
    this.authFailures++;
  }
  statement(): void {
    this.statements++;
  }
  denied(): void {
    this.denials++;
  }
  auditRefusal(): void {
    this.auditRefusals++;
  }
  observe(ms: number, failed: boolean): void {
    if (failed) this.statementErrors++;
    this.durationSum += ms;
    let i = 0;
    while (i < BUCKETS_MS.length && ms > BUCKETS_MS[i]!) i++;
    this.buckets[i]!++;
  }

  render(extra: Record<string, number> = {}): string {
    const lines = [
      '# TYPE scalple_sessions_opened_total counter',
      `scalple_sessions_opened_total ${this.sessionsOpened}`,
      '# TYPE scalple_sessions_open gauge',
      `scalple_sessions_open ${this.sessionsOpen}`,
      '# TYPE scalple_auth_failures_total counter',
      `scalple_auth_failures_total ${this.authFailures}`,
      '# TYPE scalple_statements_total counter',
      `scalple_statements_total ${this.statements}`,
      '# TYPE scalple_statement_errors_total counter',
      `scalple_statement_errors_total ${this.statementErrors}`,
      '# TYPE scalple_denials_total counter',
      `scalple_denials_total ${this.denials}`,
      '# TYPE scalple_audit_refusals_total counter',
      `scalple_audit_refusals_total ${this.auditRefusals}`,
      '# TYPE scalple_statement_duration_ms histogram',
    ];
    let cum = 0;
    BUCKETS_MS.forEach((le, i) => {
      cum += this.buckets[i]!;
      lines.push(`scalple_statement_duration_ms_bucket{le="${le}"} ${cum}`);
    });
    cum += this.buckets[BUCKETS_MS.length]!;
    lines.push(`scalple_statement_duration_ms_bucket{le="+Inf"} ${cum}`);
    lines.push(`scalple_statement_duration_ms_sum ${this.durationSum}`);
    lines.push(`scalple_statement_duration_ms_count ${cum}`);
    for (const [k, v] of Object.entries(extra)) lines.push(`# TYPE ${k} gauge`, `${k} ${v}`);
    return lines.join('\n') + '\n';
  }
}
