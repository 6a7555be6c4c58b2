// Summarises a V8 .cpuprofile (from `BENCH_PROFILE=scalple-buffered npm run bench`, which runs that
// proxy under `node --cpu-prof`): self time per function, per file, and inclusive time of the
// project's own functions.
//   node --import tsx bench/profile-summary.ts bench/results/profile/CPU.….cpuprofile [top=25]
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [top]\n');
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map<number, ProfileNode>();
const parent = new Map<number, number>();
for (const n of prof.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}

const selfUs = new Map<number, number>();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const u = url.replace(/^file:\/\//, '').replace(/\?.*$/, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  const src = u.indexOf('/src/');
  if (src >= 0) return u.slice(src + 1);
  if (u.startsWith('node:')) return u;
  return path.basename(u);
}
const label = (cf: CallFrame) => `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;

const selfByFn = new Map<string, number>();
const selfByFile = new Map<string, number>();
const inclByFn = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const key = label(n.callFrame);
  selfByFn.set(key, (selfByFn.get(key) ?? 0) + us);
  const f = shortUrl(n.callFrame.url);
  const fileKey = f.startsWith('src/') ? f : f.split('/')[0]!;
  selfByFile.set(fileKey, (selfByFile.get(fileKey) ?? 0) + us);
  // Inclusive: every distinct frame on the stack gets the sample once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur)!.callFrame);
    if (seen.has(k)) continue;
    seen.add(k);
    inclByFn.set(k, (inclByFn.get(k) ?? 0) + us);
  }
}

// Where the busy time goes, by what is on the stack (first matching rule wins).
const CATEGORIES: [string, (labels: string[]) => boolean][] = [
  ['audit: hashing, JSON, queue, INSERT (src/audit, pg client)', (l) => l.some((x) => x.includes(' src/audit/') || x.includes(' pg/') || x.includes(' pg-protocol/'))],
  ['SQL analysis (libpg-query parse, analyzer)', (l) => l.some((x) => x.includes('libpg-query') || x.includes('src/proxy/analyzer.ts') || x.includes('src/sql/') || /^wasm-function/.test(x))],
  ['socket writes (syscalls: write/writev)', (l) => /^(writeBuffer|writev|writeUtf8String|writeLatin1String) \(native\)/.test(l[0] ?? '')],
  ['socket reads / libuv callbacks', (l) => l.some((x) => x.startsWith('onStreamRead ')) && !l.some((x) => x.includes(' src/'))],
  ['garbage collector', (l) => (l[0] ?? '').startsWith('(garbage collector)')],
  ['proxy session logic (src/proxy)', (l) => l.some((x) => x.includes(' src/proxy/'))],
  ['module loading / startup', (l) => l.some((x) => x.includes('node:internal/modules') || x.includes('tsx/'))],
  ['other', () => true],
];
const byCategory = new Map<string, number>();
for (const [id, us] of selfUs) {
  const labels: string[] = [];
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) labels.push(label(byId.get(cur)!.callFrame));
  if (labels[0] === '(idle) (native)' || labels[0] === '(program) (native)') continue;
  const cat = CATEGORIES.find(([, test]) => test(labels))![0];
  byCategory.set(cat, (byCategory.get(cat) ?? 0) + us);
}

const pct = (us: number) => ((100 * us) / total).toFixed(1).padStart(5) + '%';
const print = (title: string, m: Map<string, number>, filter: (k: string) => boolean = () => true) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...m].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}\n`);
  }
};
const idle = selfByFn.get('(idle) (native)') ?? 0;
process.stdout.write(`${file}\nwall ${((prof.endTime - prof.startTime) / 1e6).toFixed(1)} s, sampled ${(total / 1e6).toFixed(1)} s, idle ${pct(idle)}, busy ${pct(total - idle)}\n`);
const busy = [...byCategory.values()].reduce((a, b) => a + b, 0);
process.stdout.write(`\nBusy time by category (share of busy time, idle and (program) excluded)\n`);
for (const [k, us] of [...byCategory].sort((a, b) => b[1] - a[1])) {
  process.stdout.write(`  ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}\n`);
}
print('Self time by function', selfByFn);
print('Self time by file / package', selfByFile);
print('Inclusive time, project functions (src/)', inclByFn, (k) => k.includes(' src/'));
