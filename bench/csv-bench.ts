/**
 * How long validating a full-size migration file takes: 50,000 valid rows (some values quoted with
 * commas, doubled quotes and a line break, a UserRoot column, CRLF line ends), validated in-process
 * as the upload and the CLI do. SPEC §1's goal: well under a second. CPU time is shown beside wall
 * time, and csv-parse alone on the same file is timed too, so a figure from a busy machine can still
 * be read. Reproduce with:
 *   npx tsc -p tsconfig.json && node dist/bench/csv-bench.js [rows]
 */
import { parse } from 'csv-parse/sync';
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { MAX_DATA_ROWS, validateMigrationFile } from '../src/csv/index.js';

/** A realistic file: mostly plain rows, every tenth password quoted the way Excel writes it. */
function migrationFile(rows: number): Buffer {
  const lines = ['EmailAddress,UserName,Password,UserRoot'];
  for (let i = 0; i < rows; i++) {
    const password = i % 10 === 0 ? `"p,w ""${i}""\nx"` : `Pw-${i}-${(i * 7919) % 100000}!`;
    lines.push(`user${i}.name@dept${i % 50}.example.com,user${i},${password},/users/user${i}`);
  }
  return Buffer.from(lines.join('\r\n') + '\r\n');
}

interface Timing {
  first: number;
  median: number;
  min: number;
  /** Median CPU time (user + system) of the warm runs: what the work costs when others load the machine. */
  cpu: number;
}

async function time(runs: number, fn: () => unknown): Promise<Timing> {
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  const [first, ...warm] = wall;
  warm.sort((a, b) => a - b);
  const warmCpu = cpu.slice(1).sort((a, b) => a - b);
  const mid = Math.floor(warm.length / 2);
  return { first: first as number, median: warm[mid] as number, min: warm[0] as number, cpu: warmCpu[mid] as number };
}

const ms = (x: number) => `${x.toFixed(0)} ms`;
const show = (t: Timing) => `median ${ms(t.median)} (min ${ms(t.min)}, CPU ${ms(t.cpu)}, first run ${ms(t.first)})`;

const rows = Number(process.argv[2] ?? MAX_DATA_ROWS);
const file = migrationFile(rows);
const check = await validateMigrationFile(file);
if (!check.valid) throw new Error(`the generated file should be valid: ${JSON.stringify(check.errors.slice(0, 3))}`);

const validation = await time(7, () => validateMigrationFile(file));
const csvParse = await time(7, () => parse(file, { relax_column_count: true, max_record_size: 8192 }));
process.stdout.write(
  `csv validation: ${rows.toLocaleString('en-US')} rows, ${(file.length / 1048576).toFixed(1)} MB: ` +
    `${show(validation)}; csv-parse alone: ${show(csvParse)}; Node ${process.version}, load average ${loadavg()[0]?.toFixed(1)} on ${availableParallelism()} CPUs\n` +
    `reproduce: npx tsc -p tsconfig.json && node dist/bench/csv-bench.js ${rows}\n`,
);
