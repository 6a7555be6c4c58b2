// Data subjects (config key `subjects`): whose data a statement returned or changed.
//   subjects:
//     customer:
//       table: public.customers
//       key: id
//       via: [public.orders.customer_id, public.payments.customer_id]
import { ConfigError } from '../errors.ts';

export interface SubjectDef {
  name: string;
  /** schema.table */
  table: string;
  key: string;
  /** schema.table.column values that point at the subject's key. */
  via: string[];
}

export function parseSubjects(raw: unknown): SubjectDef[] {
  if (raw === undefined || raw === null) return [];
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('subjects must be a mapping of subject name to { table, key, via }');
  const out: SubjectDef[] = [];
  for (const [name, v] of Object.entries(raw)) {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new ConfigError(`subjects.${name}: names are lower_snake_case`);
    const d = v as Record<string, unknown>;
    if (typeof d.table !== 'string' || typeof d.key !== 'string') throw new ConfigError(`subjects.${name} needs table (schema.table) and key (a column)`);
    const table = d.table.includes('.') ? d.table.toLowerCase() : `public.${d.table.toLowerCase()}`;
    const via = Array.isArray(d.via) ? d.via.map((c, i) => {
      if (typeof c !== 'string' || c.split('.').length < 2) throw new ConfigError(`subjects.${name}.via[${i}] must be schema.table.column`);
      const parts = c.toLowerCase().split('.');
      return parts.length === 2 ? `public.${parts.join('.')}` : parts.join('.');
    }) : [];
    out.push({ name, table, key: d.key.toLowerCase(), via });
  }
  return out;
}
